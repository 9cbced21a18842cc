//! DigitalOcean App Platform provider (to be written).
