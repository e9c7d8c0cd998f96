//! `config/grafana/rtcdn.json` queries only metrics a node serves: every `rtcdn_*` name in its
//! panels' expressions is a family of a real `/metrics` scrape (a histogram's `_bucket`, `_sum`
//! and `_count` count as its family), and the file is a dashboard Grafana imports (panels with
//! Prometheus targets on the `DS_PROMETHEUS` input).

use std::alloc::System;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hyper::Method;
use rtcdn::alloc_count::CountingAllocator;

mod common;
use common::{raw_request, test_node};

// As in the rtcdn binary: the allocation counters are served only where allocations are counted.
#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_metrics_the_node_serves() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/grafana/rtcdn.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard JSON");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = BTreeSet::new();
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("rtcdn_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");

    let node = test_node(1);
    let url = format!("http://{}/metrics", node.http_addr());
    // The cores publish their counters at start and shortly after anything happens; the
    // first publication says whether allocations are counted.
    let start = Instant::now();
    let scrape = loop {
        let scrape = raw_request(Method::GET, &url, &[], Vec::new()).await;
        if scrape.body.contains("rtcdn_media_allocations_total")
            || start.elapsed() > Duration::from_secs(3)
        {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let families: BTreeSet<&str> = scrape
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for name in &queried {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| families.contains(base))
            .unwrap_or(name);
        assert!(
            families.contains(family),
            "the dashboard queries {name}, which /metrics does not serve: {families:?}"
        );
    }
    node.stop();
}
