//! Values out of the Prometheus text exposition format.

/// Sums every series of `name` (a counter or gauge, any labels) in `text`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of `name` with exactly the label set `labels` (e.g.
/// `source="cache"`), if present.
pub fn metric_with(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes `http://addr/metrics` and sums every series of `name`; 0 when
/// the scrape fails (the process is starting or gone).
pub async fn scrape(addr: &str, name: &str) -> f64 {
    scrape_with(&reqwest::Client::new(), addr, name).await
}

/// [`scrape`] with a client kept between scrapes (frequent samples).
pub async fn scrape_with(client: &reqwest::Client, addr: &str, name: &str) -> f64 {
    let Ok(resp) = client.get(format!("http://{addr}/metrics")).send().await else {
        return 0.0;
    };
    metric(&resp.text().await.unwrap_or_default(), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series_and_finds_labels() {
        let text = "# HELP x\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\nx_totalish 9\ny 1.5\n";
        assert_eq!(metric(text, "x_total"), 5.0);
        assert_eq!(metric(text, "y"), 1.5);
        assert_eq!(metric(text, "z"), 0.0);
        assert_eq!(metric_with(text, "x_total", "a=\"2\""), Some(3.0));
        assert_eq!(metric_with(text, "x_total", "a=\"3\""), None);
    }
}
