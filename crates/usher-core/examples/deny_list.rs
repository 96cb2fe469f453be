//! An extension actor: refuses clients whose IP address is on a deny list.
//!
//! It joins the broker without touching core internals: it is an ordinary
//! actix actor that handles `CheckClient`, handed to the broker as a
//! `Recipient<CheckClient>` in `Extensions::admission`, and it reads its own
//! settings from the free-form table `[actors.deny_list]`:
//!
//! ```toml
//! [actors.deny_list]
//! deny = ["192.0.2.7", "127.0.0.2"]
//! ```
//!
//! Run it: `cargo run -p usher-core --example deny_list -- my.toml` (layered
//! over the built-in defaults, like `usher run -c my.toml`).

use std::collections::HashSet;
use std::net::IpAddr;

use actix::prelude::*;
use anyhow::{anyhow, Context as _};
use usher_core::config::{self, ConfigSources};
use usher_core::{CheckClient, Extensions, Settings, Verdict};

/// Refuses the configured client addresses.
pub struct DenyList {
    denied: HashSet<IpAddr>,
}

impl DenyList {
    /// Reads `[actors.deny_list] deny = [...]`; an absent table denies nobody.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<DenyList> {
        let Some(table) = settings.actors.get("deny_list") else {
            return Ok(DenyList { denied: HashSet::new() });
        };
        let list = table
            .get("deny")
            .and_then(|v| v.as_array())
            .ok_or_else(|| anyhow!("actors.deny_list.deny: expected a list of IP addresses"))?;
        let denied = list
            .iter()
            .map(|v| {
                let text = v.as_str().ok_or_else(|| anyhow!("actors.deny_list.deny: found {v}; expected an IP"))?;
                text.parse().with_context(|| format!("actors.deny_list.deny: {text:?} is not an IP address"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(DenyList { denied })
    }
}

impl Actor for DenyList {
    type Context = Context<Self>;
}

impl Handler<CheckClient> for DenyList {
    type Result = Verdict;

    fn handle(&mut self, msg: CheckClient, _: &mut Self::Context) -> Verdict {
        if self.denied.contains(&msg.client.ip()) {
            Verdict::Deny { reason: "on the deny list".into() }
        } else {
            Verdict::Allow
        }
    }
}

/// Builds the extensions with a started DenyList (inside a running System).
pub fn extensions(settings: &Settings) -> anyhow::Result<Extensions> {
    let deny = DenyList::from_settings(settings)?.start();
    Ok(Extensions { admission: vec![deny.recipient()], ..Extensions::default() })
}

fn main() -> anyhow::Result<()> {
    let files = std::env::args().skip(1).map(Into::into).collect();
    let settings = config::load(&ConfigSources::files(files)).map_err(|errors| anyhow!("{errors}"))?;
    let (log, _guard) = usher_core::logger(&settings.log);
    let listeners = usher_core::bind_all(&settings)?;
    actix_rt::System::new().block_on(async move {
        let ext = extensions(&settings)?;
        usher_core::run(settings, listeners, log, ext, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })
}
