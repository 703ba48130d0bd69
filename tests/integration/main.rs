//! Integration tests against real processes: a local Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager), MariaDB with binlog and PostgreSQL with logical replication — started
//! once for this binary by the `lynq env up` supervisor.

mod support;

mod crds;
mod demo;
mod environment;
mod form;
mod hub_mysql;
mod node;
mod node_policies;
