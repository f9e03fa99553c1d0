//! The integration tests of the `colony` CLI, one binary with a module per topic. Clusters
//! run one at a time (`common::Cluster`), whatever module starts them.
//!
//! - `certs`: `colony certs init`;
//! - `cluster`: `colony up` — discovery, balancing, health, autoscaling, the store;
//! - `deploy`: `colony deploy k8s` manifests, validated and pinned by snapshots;
//! - `docker`: `colony up --docker` against the real Docker engine;
//! - `kube_apply`: applying, pruning and waiting through a fake Kubernetes API server;
//! - `observability`: logs, traces and metrics of a running cluster.

mod certs;
mod cluster;
mod common;
mod deploy;
mod docker;
mod kube_apply;
mod observability;
