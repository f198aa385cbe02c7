//! The machine side: guard's own bans pushed to the LAPI as alerts (see the module above).
