//! App Platform's instance sizes: a dated table of each size's CPUs, memory and monthly
//! price, to pick the smallest size that fits a run's `resources` and to estimate each run's
//! cost (the configured size's price is overridable with `DIGITALOCEAN_USD_PER_MONTH`).
//!
//! App Platform bills by the second, up to a monthly cap of 28 days: the per-second price is the
//! monthly one over 2,419,200 s (`GET /v2/apps/tiers/instance_sizes/apps-s-1vcpu-0.5gb` answers
//! `usd_per_month` 5.00 and `usd_per_second` 0.000002066799). Prices change: check them with
//! that endpoint (or `doctl apps tier instance-size list`) and override when they differ.

use tea_contract::Cpus;

/// When the table was last checked.
pub const PRICES_AS_OF: &str = "2026-11";

/// Seconds in App Platform's billing month (28 days).
pub const BILLING_MONTH_SECS: f64 = 2_419_200.0;

/// One instance size: its slug, vCPUs (shared on `apps-s-`, dedicated on `apps-d-`), memory
/// and monthly price in USD, as of [`PRICES_AS_OF`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstanceSize {
    pub slug: &'static str,
    pub cpus: u64,
    pub memory_mib: u64,
    pub usd_per_month: f64,
}

const fn size(slug: &'static str, cpus: u64, memory_mib: u64, usd: f64) -> InstanceSize {
    InstanceSize {
        slug,
        cpus,
        memory_mib,
        usd_per_month: usd,
    }
}

/// Every size App Platform offers a worker, cheapest first, as of [`PRICES_AS_OF`].
pub const SIZES: &[InstanceSize] = &[
    size("apps-s-1vcpu-0.5gb", 1, 512, 5.0),
    size("apps-s-1vcpu-1gb-fixed", 1, 1024, 10.0),
    size("apps-s-1vcpu-1gb", 1, 1024, 12.0),
    size("apps-s-1vcpu-2gb", 1, 2048, 25.0),
    size("apps-d-1vcpu-0.5gb", 1, 512, 29.0),
    size("apps-d-1vcpu-1gb", 1, 1024, 34.0),
    size("apps-d-1vcpu-2gb", 1, 2048, 39.0),
    size("apps-d-1vcpu-4gb", 1, 4096, 49.0),
    size("apps-s-2vcpu-4gb", 2, 4096, 50.0),
    size("apps-d-2vcpu-4gb", 2, 4096, 78.0),
    size("apps-d-2vcpu-8gb", 2, 8192, 98.0),
    size("apps-d-4vcpu-8gb", 4, 8192, 156.0),
    size("apps-d-4vcpu-16gb", 4, 16384, 196.0),
    size("apps-d-8vcpu-32gb", 8, 32768, 392.0),
];

/// The table's size named `slug`.
pub fn instance_size(slug: &str) -> Option<&'static InstanceSize> {
    SIZES.iter().find(|s| s.slug == slug)
}

/// The table's monthly price of `slug`, if it has one.
pub fn usd_per_month(slug: &str) -> Option<f64> {
    instance_size(slug).map(|s| s.usd_per_month)
}

/// The cheapest size with at least `cpu` and `memory` (either may be absent).
pub fn smallest_fitting(cpu: Option<Cpus>, memory: Option<u64>) -> Option<&'static InstanceSize> {
    SIZES.iter().find(|s| {
        cpu.is_none_or(|cpu| cpu.millis() <= s.cpus * 1000)
            && memory.is_none_or(|bytes| bytes <= s.memory_mib << 20)
    })
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
            SIZES
                .iter()
                .all(|s| super::super::config::validate_slug(s.slug).is_ok()),
            "every priced size is a current slug"
        );
        assert!(
            SIZES
                .windows(2)
                .all(|w| w[0].usd_per_month <= w[1].usd_per_month),
            "cheapest first"
        );
    }

    #[test]
    fn a_request_gets_the_cheapest_size_that_fits() {
        let slug = |cpu: Option<u64>, memory: Option<u64>| {
            smallest_fitting(cpu.map(Cpus::from_millis), memory).map(|s| s.slug)
        };
        assert_eq!(slug(None, None), Some("apps-s-1vcpu-0.5gb"));
        assert_eq!(slug(Some(500), Some(256 << 20)), Some("apps-s-1vcpu-0.5gb"));
        assert_eq!(slug(Some(1000), Some(1536 << 20)), Some("apps-s-1vcpu-2gb"));
        assert_eq!(slug(Some(1500), None), Some("apps-s-2vcpu-4gb"));
        assert_eq!(slug(Some(2000), Some(6 << 30)), Some("apps-d-2vcpu-8gb"));
        assert_eq!(slug(None, Some(32 << 30)), Some("apps-d-8vcpu-32gb"));
        assert_eq!(slug(Some(16_000), None), None);
        assert_eq!(slug(None, Some(64 << 30)), None);
    }
}
