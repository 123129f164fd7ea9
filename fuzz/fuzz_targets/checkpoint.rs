//! Checkpoints as `lits train --resume` reads them: the safetensors file and its state,
//! then the tensors put into a small U-Net and its optimiser.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use lits_model::{UNet3d, UNetConfig};
use lits_train::checkpoint::{self, Checkpoint};
use lits_train::optim::{Optimizer, OptimizerConfig};
use lits_train::train::{restore, TrainState};
use tch::{nn, Device};

struct Model {
    vs: nn::VarStore,
    _net: UNet3d,
    optimizer: Optimizer,
}

thread_local! {
    static MODEL: RefCell<Model> = RefCell::new({
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 2, ..Default::default() });
        let optimizer = Optimizer::new(&vs, OptimizerConfig::default());
        Model { vs, _net: net, optimizer }
    });
}

fuzz_target!(|data: &[u8]| {
    let path = lits_fuzz::scratch("last.ckpt", data);
    match checkpoint::load::<TrainState>(&path) {
        Ok(Checkpoint { tensors, state }) => MODEL.with(|m| {
            let m = &mut *m.borrow_mut();
            if let Err(e) = restore(&mut m.vs, &mut m.optimizer, &state, &tensors, &path) {
                lits_fuzz::names_file(&path, &e);
            }
        }),
        Err(e) => lits_fuzz::names_file(&path, &e),
    }
});
