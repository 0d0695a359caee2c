//! OCI runtimes. runc drives CRIU itself (`runc checkpoint` / `runc restore`); crun on Debian 12
//! is built without CRIU support, so runc is the one runtime for now.

pub mod docker;
pub mod runc;
