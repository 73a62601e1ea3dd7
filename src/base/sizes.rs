//! Sizes for people: podman's decimal units.

/// `1234567890` → "1.23 GB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)] // a size shown with three digits
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = u;
    }
    format!("{value:.2} {unit}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_units_with_three_digits() {
        assert_eq!(super::human(999), "999 B");
        assert_eq!(super::human(121_000_000), "121.00 MB");
    }
}
