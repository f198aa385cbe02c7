//! Helpers for the end-to-end tests: namespaces, veth pairs and processes with RAII clean-up.
