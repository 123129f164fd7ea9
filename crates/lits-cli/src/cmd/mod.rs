//! One module per subcommand: argument struct plus `run`.

pub mod env;
pub mod evaluate;
pub mod explain;
pub mod inspect;
pub mod plan;
pub mod predict;
pub mod preprocess;
pub mod sync;
pub mod synth;
pub mod train;
