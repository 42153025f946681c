//! tlab-testkit
