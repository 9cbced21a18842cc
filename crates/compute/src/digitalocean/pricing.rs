//! What App Platform charges for a worker, to estimate each run's cost: a dated table of
//! monthly prices by instance size, overridable with `DIGITALOCEAN_USD_PER_MONTH`.
//!
//! App Platform bills by the second, up to a monthly cap of 28 days: the per-second price is the
//! monthly one over 2,419,200 s (`GET /v2/apps/tiers/instance_sizes/apps-s-1vcpu-0.5gb` answers
//! `usd_per_month` 5.00 and `usd_per_second` 0.000002066799). Prices change: check them with
//! that endpoint (or `doctl apps tier instance-size list`) and override when they differ.

/// When the table was last checked.
pub const PRICES_AS_OF: &str = "2026-11";

/// Seconds in App Platform's billing month (28 days).
pub const BILLING_MONTH_SECS: f64 = 2_419_200.0;

/// Monthly price in USD of one instance of each size, as of [`PRICES_AS_OF`].
const USD_PER_MONTH: &[(&str, f64)] = &[
    ("apps-s-1vcpu-0.5gb", 5.0),
    ("apps-s-1vcpu-1gb-fixed", 10.0),
    ("apps-s-1vcpu-1gb", 12.0),
    ("apps-s-1vcpu-2gb", 25.0),
    ("apps-s-2vcpu-4gb", 50.0),
    ("apps-d-1vcpu-0.5gb", 29.0),
    ("apps-d-1vcpu-1gb", 34.0),
    ("apps-d-1vcpu-2gb", 39.0),
    ("apps-d-1vcpu-4gb", 49.0),
    ("apps-d-2vcpu-4gb", 78.0),
    ("apps-d-2vcpu-8gb", 98.0),
    ("apps-d-4vcpu-8gb", 156.0),
    ("apps-d-4vcpu-16gb", 196.0),
    ("apps-d-8vcpu-32gb", 392.0),
];

/// The table's monthly price of `slug`, if it has one.
pub fn usd_per_month(slug: &str) -> Option<f64> {
    USD_PER_MONTH
        .iter()
        .find(|(s, _)| *s == slug)
        .map(|(_, price)| *price)
}

/// The per-second price of a size costing `usd_per_month`.
pub fn usd_per_second(usd_per_month: f64) -> f64 {
    usd_per_month / BILLING_MONTH_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_second_price_matches_the_api_s() {
        let price = usd_per_month("apps-s-1vcpu-0.5gb").expect("default size priced");
        assert!((usd_per_second(price) - 0.000_002_066_799).abs() < 1e-12);
        assert_eq!(usd_per_month("apps-s-9vcpu-1tb"), None);
        assert!(
            USD_PER_MONTH
                .iter()
                .all(|(slug, _)| super::super::config::validate_slug(slug).is_ok()),
            "every priced size is a current slug"
        );
    }
}
