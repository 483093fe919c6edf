//! The load balancers' target groups, kept every second from the API's
//! EndpointSlices when the API runs as pods (what the AWS Load Balancer
//! Controller does in EKS): the decisions and the runtime API commands are
//! [`crate::services::targets`]'s; this is the loop, a task of its own so
//! that a node frozen with its AZ never holds up RDS's detection.

use std::time::Duration;

use crate::progress::Progress;
use crate::services::{kubernetes, targets::Controller};
use crate::state;

/// Until the stack is gone.
pub async fn run(stack: String, p: Progress) {
    let mut controller = Controller::default();
    let mut client: Option<kube::Client> = None;
    let mut last_error = String::new();
    loop {
        let st = match state::load(&stack) {
            Ok(Some(s)) => s,
            Ok(None) | Err(_) => return,
        };
        let parsed = st.parsed_stack();
        if let (Ok(parsed), Some(ep)) = (parsed, kubernetes::endpoint(&st)) {
            if client.is_none() {
                client = ep.probe_client(Duration::from_secs(10)).await.ok();
            }
            if let Some(c) = &client {
                match controller.reconcile(c, &st, &parsed).await {
                    Ok(lines) => {
                        for l in lines {
                            p.say(&l);
                            let _ = state::record_event(&stack, &l);
                        }
                        last_error.clear();
                    }
                    Err(e) if e != last_error => {
                        p.say(&format!("targets: {e}"));
                        last_error = e;
                    }
                    Err(_) => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
