//! One module per subcommand: argument struct plus `run`.

pub mod env;
pub mod inspect;
pub mod preprocess;
pub mod synth;
