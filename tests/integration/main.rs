//! Integration tests against real processes: a local Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager), MariaDB with binlog and PostgreSQL with logical replication — started
//! once for this binary by the `lynq env up` supervisor.

mod support;

mod crds;
mod demo;
mod environment;
mod form;
mod hub_postgres;
mod hub_restarts;
mod hub_scenarios;
mod hub_support;
mod leader;
mod manifests;
mod metrics;
mod node;
mod node_policies;
