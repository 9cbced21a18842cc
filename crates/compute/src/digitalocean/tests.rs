//! Integration-style tests of the provider against an in-test mini App Platform server.
