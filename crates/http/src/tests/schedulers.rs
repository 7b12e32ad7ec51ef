//! `/v1/agent/schedulers` and `/v1/agent/schedulers/config` over a fake worker pool
//! (`Schedulers`).

use std::sync::Mutex;

use caravan_agent_core::sched::{SchedulerConfig, WorkerInfo};


/// Two CPUs, no workers, a configuration of 2 × `service, _core` that a valid write replaces.
pub(super) struct SchedFake {
    config: Mutex<SchedulerConfig>,
}

impl SchedFake {
    pub(super) fn new() -> SchedFake {
        SchedFake {
            config: Mutex::new(SchedulerConfig {
                num_schedulers: 2,
                enabled_schedulers: vec!["service".into(), "_core".into()],
            }),
        }
    }
}

impl crate::Schedulers for SchedFake {
    fn schedulers(&self) -> Option<Vec<WorkerInfo>> {
        Some(Vec::new())
    }
    fn scheduler_config(&self) -> Option<SchedulerConfig> {
        Some(self.config.lock().unwrap().clone())
    }
    fn set_scheduler_config(&self, config: SchedulerConfig) -> SchedulerConfig {
        *self.config.lock().unwrap() = config.clone();
        config
    }
    fn num_cpus(&self) -> u32 {
        2
    }
}
