//! Configuration (owned by the config helper).
