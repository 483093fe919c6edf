//! Injecting faults into a running stack and healing them. A fault is
//! recorded in the run's state before it takes effect, so `heal` (or
//! `down`) can undo it even if the process dies halfway.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;

use crate::error::{Error, Result};
use crate::fault::{Fault, LinkEffect, Stop};
use crate::progress::Progress;
use crate::runtime::{container, link, route};

use super::running::RunningStack;
use crate::services::lifecycle::{wait_ready, wait_restarted};

impl RunningStack {
    /// Break something. The fault is recorded in the run's state before it
    /// takes effect, so `heal` (or `down`) can undo it even if we die halfway.
    pub async fn inject(&mut self, fault: Fault) -> Result<()> {
        self.refresh()?;
        let stack = self.stack()?;
        fault.validate(&stack).map_err(|e| {
            Error::usage(format!("fault `{fault}`: {e}"), "name AZs and instances as `voyager-sim status` shows them")
        })?;
        let binary = match fault {
            Fault::Latency { .. } => Some(
                crate::companion::NETAGENT
                    .locate()
                    .map_err(|e| Error::usage(e, "latency faults run the link agent"))?,
            ),
            _ => None,
        };
        self.state.faults.push(fault.clone());
        let index = self.state.faults.len();
        self.save_state()?;
        route::install_drops(&self.state.stack, &fault.drops(&stack)).await?;
        match fault.shapes(&stack) {
            Some((LinkEffect::Delay { delay_us, jitter_us }, pairs)) => {
                // A queued packet skips the normal latency's queue, so this
                // agent adds it when the link crosses AZs.
                let base = if fault.crosses_azs(&stack) { stack.inter_az_latency } else { Duration::ZERO };
                let role = format!("{}-{index}", link::FAULT_AGENT);
                let image = crate::images::companion_base(self.state.images);
                let binary = binary.expect("located above");
                let delay = base + Duration::from_micros(delay_us);
                let q = link::start_delay_agent(
                    &self.docker,
                    &self.labels(),
                    &role,
                    &image,
                    &binary,
                    link::Hold { delay, jitter: Duration::from_micros(jitter_us), seed: index as u64 },
                )
                .await?;
                route::install_queue(&self.state.stack, &pairs, q, true).await?;
            }
            Some((LinkEffect::Loss { ppm }, pairs)) => route::install_loss(&self.state.stack, &pairs, ppm).await?,
            Some((LinkEffect::Rate { kbit }, pairs)) => {
                link::install_rate(&self.state.stack, &stack, &pairs, kbit, 0x10 + index as u16).await?
            }
            None => {}
        }
        let stops = fault.stops(&stack);
        let this = &*self;
        let results = join_all(stops.iter().map(|(name, how)| async move {
            let inst = this.instance(name)?;
            match how {
                Stop::Kill => container::kill(&this.docker, &inst.container).await?,
                Stop::Pause => container::pause(&this.docker, &inst.container).await?,
            }
            Ok::<_, Error>(())
        }))
        .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// Undo every fault in force: network drops go, paused instances thaw,
    /// killed ones start again; returns when each of those answers again.
    pub async fn heal(&mut self, timeout: Duration) -> Result<Vec<Fault>> {
        self.refresh()?;
        let stack = self.stack()?;
        route::remove_faults(&self.state.stack).await?;
        link::remove_agents(&self.docker, &self.state.stack, link::FAULT_AGENT).await?;
        link::remove_rates(&self.state.stack, &stack).await;
        // Each stopped instance once; its container's state says whether it
        // thaws or starts (a paused one may have been killed since).
        let resume: BTreeMap<String, ()> =
            self.state.faults.iter().flat_map(|f| f.stops(&stack)).map(|(name, _)| (name, ())).collect();
        let this = &*self;
        let results = join_all(resume.keys().map(|name| async move {
            let inst = this.instance(name)?;
            let started = match container::state(&this.docker, &inst.container).await {
                Some(s) if s.paused => {
                    container::unpause(&this.docker, &inst.container).await?;
                    false
                }
                Some(s) if !s.running => {
                    container::restart_stopped(&this.docker, &inst.container).await?;
                    true
                }
                _ => false,
            };
            if started {
                wait_restarted(&this.docker, &this.state, inst, timeout, &Progress::silent()).await
            } else {
                wait_ready(&this.docker, &this.state, inst, timeout, &Progress::silent()).await
            }
        }))
        .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        let healed = std::mem::take(&mut self.state.faults);
        self.save_state()?;
        Ok(healed)
    }
}
