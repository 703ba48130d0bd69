//! The hub: row changes from a source turned into LynqNodes (one per active row per form), and the
//! LynqForm controller that validates forms and reports their rollout.

pub mod config;
pub mod controller;
pub mod desired;
pub mod form;
pub mod form_check;
pub mod guard;
pub mod rollout;
pub mod runner;
pub mod startup;
pub mod sync;
pub mod writer;
