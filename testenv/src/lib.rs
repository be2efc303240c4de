//! archway's local environment, made of real parts: etcd and the Kubernetes control plane built from
//! their Go modules, a Docker registry with TLS and htpasswd, qemu registered through binfmt_misc, and the
//! hostlet, a fake kubelet that registers per-architecture nodes and really runs their tool pods.

pub mod baseimage;
pub mod binfmt;
pub mod certs;
pub mod cluster_setup;
pub mod controlplane;
pub mod env;
pub mod gobuild;
pub mod hostlet;
pub mod operator_image;
pub mod process;
pub mod registry;
pub mod toolimages;
