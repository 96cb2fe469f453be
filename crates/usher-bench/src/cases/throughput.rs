//! `throughput`: bulk transfer server → client over 1 and 4 streams;
//! Gbit/s and the proxy's CPU seconds per GB (utime + stime of the proxy
//! process, from /proc, over the measured interval).

use std::time::Duration;

use super::{Harness, REFERENCE};
use crate::backends::{Backend, Behavior};
use crate::load;
use crate::report::{CaseResult, Metric};

pub fn run(h: &Harness) -> Vec<CaseResult> {
    let p = REFERENCE;
    [1, 4]
        .into_iter()
        .map(|streams| {
            let title = format!("throughput: {streams} stream(s), server to client; {}", h.describe(&p));
            let metrics = vec![Metric::higher("Gbit/s", 2), Metric::lower("proxy CPU s/GB", 3), Metric::zero("errors")];
            h.alternate("throughput", title, metrics, h.proxies.clone(), |kind| {
                let rt = h.load_runtime(&p)?;
                let backend = Backend::start(rt.handle(), Behavior::Source)?;
                let proxy = h.start_proxy(kind, &[backend.addr], &h.tune(&p, 0, Duration::from_secs(10)))?;
                let w = h.window();
                let (out, cpu) =
                    rt.block_on(async { tokio::join!(load::bulk(proxy.addr, streams, w), proxy.cpu_during(w)) });
                let gigabytes = out.bytes as f64 / 1e9;
                let cpu_per_gb = cpu.map_or(f64::NAN, |c| c / gigabytes);
                Ok(vec![gigabytes * 8.0 / w.seconds(), cpu_per_gb, out.errors as f64])
            })
        })
        .collect()
}
