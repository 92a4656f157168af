//! `tickflow alerts test CHANNEL`: one test alert through one notifier of a config, so a
//! wrong password or webhook URL shows before a real alert needs it.

use std::process::ExitCode;

use tickflow_core::notify::{DeliveryError, idempotency_key};
use tickflow_model::{Alert, AlertKind, Price, Severity, Symbol, UnixNanos};

use crate::cli::AlertsTestArgs;

pub(crate) fn test(args: &AlertsTestArgs) -> anyhow::Result<ExitCode> {
    let plan = match tickflow_pipeline::config::load(&args.config) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let Some(notifier) = plan.notifiers.iter().find(|n| n.id == args.channel) else {
        let ids: Vec<&str> = plan.notifiers.iter().map(|n| n.id.as_str()).collect();
        eprintln!(
            "error: {} has no notifier {:?}; its notifiers: {}",
            args.config.display(),
            args.channel,
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        );
        return Ok(ExitCode::from(super::EXIT_USAGE));
    };
    let now = UnixNanos::now();
    let alert = Alert {
        alert_id: format!("test-{:016x}", now.0),
        rule: "tickflow-test".into(),
        symbol: Symbol::parse("TEST")?,
        ts: now,
        value: Price::parse("1")?,
        threshold: "0".into(),
        message: format!(
            "Test alert from tickflow: if you can read this, the {} notifier works.",
            args.channel
        ),
        severity: Severity::Info,
        delivered_to: "log".into(),
        kind: AlertKind::Fired,
    };
    let channel = notifier
        .config
        .build(&notifier.id)
        .map_err(|e| anyhow::anyhow!("starting notifier {}: {e}", notifier.id))?;
    let key = idempotency_key(&alert, &notifier.id);
    let rt = super::runtime()?;
    match rt.block_on(channel.deliver(&alert, &key)) {
        Ok(()) => {
            println!(
                "sent a test alert to {} ({})",
                notifier.id,
                notifier.config.describe()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(DeliveryError::Retry(e)) => {
            eprintln!(
                "error: {} did not take it (worth retrying: the pipeline would): {e}",
                notifier.id
            );
            Ok(ExitCode::from(1))
        }
        Err(DeliveryError::Permanent(e)) => {
            eprintln!("error: {} refused it: {e}", notifier.id);
            Ok(ExitCode::from(1))
        }
    }
}
