//! cutover's control plane: configuration, the process supervisor, health
//! checks and the admin API. It changes the data plane only through the
//! [`cutover_proxy::TableHandle`] and the backends' drain signals.

pub mod config;
