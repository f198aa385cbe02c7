//! Call budgets: per client address per UTC day and in total per UTC day. The day number is
//! passed in, so the budget is plain data testable without a clock.
use std::collections::HashMap;
use std::net::IpAddr;

/// Why a call was refused by the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// This client used its calls for the day.
    Client,
    /// All clients together used the day's calls.
    Total,
    /// Too many distinct clients are tracked today to track one more.
    TooManyClients,
}

#[derive(Debug)]
pub(crate) struct Budget {
    per_client: u32,
    per_day: u32,
    max_clients: usize,
    day: u64,
    total: u32,
    clients: HashMap<IpAddr, u32>,
}

impl Budget {
    pub(crate) fn new(per_client: u32, per_day: u32, max_clients: usize) -> Self {
        Self {
            per_client,
            per_day,
            max_clients,
            day: 0,
            total: 0,
            clients: HashMap::new(),
        }
    }

    /// Charges one call for `client` (or for no client: the daily summary) on UTC day `day`.
    pub(crate) fn try_charge(&mut self, client: Option<IpAddr>, day: u64) -> Result<(), Refusal> {
        if day != self.day {
            self.day = day;
            self.total = 0;
            self.clients.clear();
        }
        if self.total >= self.per_day {
            return Err(Refusal::Total);
        }
        if let Some(addr) = client {
            let tracked = self.clients.len();
            let used = match self.clients.get_mut(&addr) {
                Some(used) => used,
                None if tracked >= self.max_clients => return Err(Refusal::TooManyClients),
                None => self.clients.entry(addr).or_insert(0),
            };
            if *used >= self.per_client {
                return Err(Refusal::Client);
            }
            *used += 1;
        }
        self.total += 1;
        Ok(())
    }
}
