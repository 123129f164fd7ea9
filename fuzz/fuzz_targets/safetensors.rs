//! Weights files: read as safetensors, then loaded into a small U-Net (`predict --weights`).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use lits_model::weights::{load_safetensors, read_safetensors};
use lits_model::{UNet3d, UNetConfig};
use tch::{nn, Device};

thread_local! {
    static MODEL: RefCell<(nn::VarStore, UNet3d)> = RefCell::new({
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 2, ..Default::default() });
        (vs, net)
    });
}

fuzz_target!(|data: &[u8]| {
    let path = lits_fuzz::scratch("weights.safetensors", data);
    if let Err(e) = read_safetensors(&path) {
        lits_fuzz::names_file(&path, &e);
    }
    MODEL.with(|m| {
        if let Err(e) = load_safetensors(&mut m.borrow_mut().0, &path) {
            lits_fuzz::names_file(&path, &e);
        }
    });
});
