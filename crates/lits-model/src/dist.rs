//! Data-parallel collectives on PyTorch's own engine: c10d's `TCPStore` for the rendezvous
//! and `ProcessGroupGloo` for the collectives, from the libtorch lits links, through the
//! C++ shim `csrc/dist.cpp`. Nothing here is a protocol of lits' own: a rank of lits joins
//! a group exactly as a PyTorch process started by `torchrun` would.
//!
//! Every collective has a timeout. When one fails (a peer's connection closed, or nothing
//! came within the timeout) the error names the ranks that are gone: each rank beats a
//! counter in the store twice a second from a thread of its own, and a failing rank reads
//! the counters twice, [`LOST_RANK_WAIT`] apart; a rank whose counter did not move is lost.

use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::ptr::NonNull;
use std::time::Duration;

use tch::Tensor;

use crate::error::{Error, Result};

/// How long a failing rank watches the heartbeats before it names the lost ranks.
pub const LOST_RANK_WAIT: Duration = Duration::from_millis(1500);

/// Gradients are summed in buckets of at most this many bytes (PyTorch DDP's default 25 MiB).
pub const BUCKET_BYTES: usize = 25 << 20;

const ERR_LEN: usize = 4096;

extern "C" {
    fn lits_group_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: c_long,
        server: bool,
        prefix: *const c_char,
        gloo_host: *const c_char,
        gloo_interface: *const c_char,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn lits_group_free(g: *mut c_void);
    fn lits_group_all_reduce(g: *mut c_void, tensors: *const *mut torch_sys::C_tensor, n: usize, err: *mut c_char, len: usize) -> c_int;
    fn lits_group_broadcast(g: *mut c_void, t: *mut torch_sys::C_tensor, root: c_int, err: *mut c_char, len: usize) -> c_int;
    fn lits_group_barrier(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn lits_group_all_reduce_autograd(
        g: *mut c_void,
        x: *mut torch_sys::C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> *mut torch_sys::C_tensor;
    fn lits_store_set(g: *mut c_void, key: *const c_char, data: *const u8, len: usize, err: *mut c_char, err_len: usize) -> c_int;
    fn lits_store_get(g: *mut c_void, key: *const c_char, len: *mut usize, err: *mut c_char, err_len: usize) -> *mut u8;
    fn lits_store_free(p: *mut u8);
    fn lits_store_check(g: *mut c_void, key: *const c_char, err: *mut c_char, err_len: usize) -> c_int;
    fn lits_group_lost_ranks(g: *mut c_void, wait_ms: c_long, out: *mut c_int, max: c_int) -> c_int;
}

/// Where and how a rank joins its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOptions {
    /// Host of rank 0, which serves the rendezvous store (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of the store (`MASTER_PORT`).
    pub master_port: u16,
    /// This process's rank (`RANK`).
    pub rank: usize,
    /// Number of processes (`WORLD_SIZE`).
    pub world: usize,
    /// How long any collective or store request may wait before it fails.
    pub timeout: Duration,
    /// Network interface Gloo binds (`GLOO_SOCKET_IFNAME`); by default the address this
    /// host reaches `master_addr` from.
    pub interface: Option<String>,
    /// Whether a launcher already serves the store at `master_addr:master_port` (torchrun:
    /// `TORCHELASTIC_USE_AGENT_STORE=True`); otherwise rank 0 serves it.
    pub launcher_store: bool,
    /// The launcher's attempt (torchrun's `TORCHELASTIC_RESTART_COUNT`): keys of an attempt
    /// never meet those of an earlier one in the launcher's store.
    pub attempt: u32,
}

/// A joined process group (see the module docs).
#[derive(Debug)]
pub struct Group {
    raw: NonNull<c_void>,
    rank: usize,
    world: usize,
    timeout: Duration,
}

// SAFETY: the shim's group is a c10d backend and store, both made to be called from any
// thread (they lock internally); lits calls them from the training thread only.
unsafe impl Send for Group {}
// SAFETY: as above.
unsafe impl Sync for Group {}

/// The local address from which this host reaches `host:port`: what Gloo must bind so that
/// the other ranks can connect back (a connected UDP socket sends nothing).
pub fn local_address_towards(host: &str, port: u16) -> Result<std::net::IpAddr> {
    let target: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Collective(format!("cannot resolve MASTER_ADDR {host}: {e}")))?
        .next()
        .ok_or_else(|| Error::Collective(format!("MASTER_ADDR {host} resolves to no address")))?;
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse().expect("literal") } else { "[::]:0".parse().expect("literal") };
    let sock = UdpSocket::bind(bind).map_err(|e| Error::Collective(format!("cannot open a socket: {e}")))?;
    sock.connect(target).map_err(|e| Error::Collective(format!("no route to MASTER_ADDR {host}: {e}")))?;
    Ok(sock.local_addr().map_err(|e| Error::Collective(e.to_string()))?.ip())
}

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Collective(format!("{what} holds a NUL byte: {s:?}")))
}

fn message(buf: &[c_char]) -> String {
    // SAFETY: the shim NUL-terminates what it writes; the buffer starts zeroed.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

impl Group {
    /// Joins the group: blocks until every rank has joined, or fails after the timeout
    /// naming the address it waited on.
    pub fn join(opts: &JoinOptions) -> Result<Group> {
        if opts.world < 1 || opts.rank >= opts.world {
            return Err(Error::Collective(format!("rank {} is not in a world of {}", opts.rank, opts.world)));
        }
        let gloo_host = local_address_towards(&opts.master_addr, opts.master_port)?.to_string();
        let host = c_string("MASTER_ADDR", &opts.master_addr)?;
        let gloo_host = c_string("the local address", &gloo_host)?;
        let iface = c_string("GLOO_SOCKET_IFNAME", opts.interface.as_deref().unwrap_or(""))?;
        let prefix = c_string("the store prefix", &format!("/worker/attempt_{}/", opts.attempt))?;
        let mut err = vec![0 as c_char; ERR_LEN];
        // SAFETY: every pointer is valid for the call; the shim copies the strings.
        let raw = unsafe {
            lits_group_new(
                host.as_ptr(),
                c_int::from(opts.master_port),
                opts.rank as c_int,
                opts.world as c_int,
                opts.timeout.as_millis().min(c_long::MAX as u128) as c_long,
                !opts.launcher_store,
                prefix.as_ptr(),
                gloo_host.as_ptr(),
                iface.as_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        match NonNull::new(raw) {
            Some(raw) => Ok(Group { raw, rank: opts.rank, world: opts.world, timeout: opts.timeout }),
            None => Err(Error::Collective(format!(
                "rank {} of {} could not join the group at {}:{} within {:?}: {}",
                opts.rank,
                opts.world,
                opts.master_addr,
                opts.master_port,
                opts.timeout,
                message(&err)
            ))),
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The ranks that stopped beating (module docs); `None` when the store itself is gone,
    /// i.e. rank 0, which serves it.
    pub fn lost_ranks(&self) -> Option<Vec<usize>> {
        let mut out = vec![0 as c_int; self.world];
        // SAFETY: `out` holds `world` ints.
        let n = unsafe {
            lits_group_lost_ranks(self.raw.as_ptr(), LOST_RANK_WAIT.as_millis() as c_long, out.as_mut_ptr(), self.world as c_int)
        };
        (n >= 0).then(|| out[..(n as usize).min(self.world)].iter().map(|&r| r as usize).collect())
    }

    /// The error for a failed `op`, naming the lost ranks.
    fn failed(&self, op: &str, err: &[c_char]) -> Error {
        self.explain(op, &message(err))
    }

    /// The error for `op` that failed with `msg` (from libtorch, say a collective inside
    /// backward), naming the lost ranks as every failed collective does.
    pub fn explain(&self, op: &str, msg: &str) -> Error {
        let who = match self.lost_ranks() {
            None => "rank 0 is gone (the rendezvous store it serves does not answer)".to_owned(),
            Some(lost) if lost.is_empty() => {
                format!("no rank stopped, so one is stuck or too slow (timeout {:?})", self.timeout)
            }
            Some(lost) => {
                let names: Vec<String> = lost.iter().map(|r| r.to_string()).collect();
                format!("lost rank {} of {} (no heartbeat for {:?})", names.join(", "), self.world, LOST_RANK_WAIT)
            }
        };
        Error::Collective(format!("rank {}: {op} failed: {who}: {msg}", self.rank))
    }

    /// Sums each tensor over the ranks, in place, one collective per tensor in the order
    /// given (every rank must pass the same shapes in the same order).
    pub fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<()> {
        let ptrs: Vec<*mut torch_sys::C_tensor> = tensors.iter().map(|t| t.as_ptr() as *mut _).collect();
        let mut err = vec![0 as c_char; ERR_LEN];
        // SAFETY: the tensors outlive the call; the shim reduces into their storage.
        let rc = unsafe { lits_group_all_reduce(self.raw.as_ptr(), ptrs.as_ptr(), ptrs.len(), err.as_mut_ptr(), err.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.failed("all-reduce", &err))
        }
    }

    /// Overwrites `t` on every rank with rank `root`'s values.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        let mut err = vec![0 as c_char; ERR_LEN];
        // SAFETY: `t` outlives the call.
        let rc = unsafe { lits_group_broadcast(self.raw.as_ptr(), t.as_ptr() as *mut _, root as c_int, err.as_mut_ptr(), err.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.failed("broadcast", &err))
        }
    }

    /// Waits until every rank has come here.
    pub fn barrier(&self) -> Result<()> {
        let mut err = vec![0 as c_char; ERR_LEN];
        // SAFETY: plain call on a live group.
        let rc = unsafe { lits_group_barrier(self.raw.as_ptr(), err.as_mut_ptr(), err.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.failed("barrier", &err))
        }
    }

    /// The sum of `x` over the ranks, differentiable: its gradient is the sum over the ranks
    /// of the gradients that reach the result, which is what a loss summed over the ranks
    /// needs (SyncBatchNorm, batch Dice). Every rank must call it, and run backward, in the
    /// same order.
    pub fn all_reduce_autograd(&self, x: &Tensor) -> Result<Tensor> {
        let mut err = vec![0 as c_char; ERR_LEN];
        // SAFETY: `x` outlives the call; the shim returns a new tensor or null.
        let out = unsafe { lits_group_all_reduce_autograd(self.raw.as_ptr(), x.as_ptr() as *mut _, err.as_mut_ptr(), err.len()) };
        if out.is_null() {
            Err(self.failed("all-reduce", &err))
        } else {
            // SAFETY: a fresh tensor allocated by the shim, owned from here on.
            Ok(unsafe { Tensor::from_ptr(out) })
        }
    }

    /// Averages the gradients of `params` over the ranks: flattened into buckets of at most
    /// [`BUCKET_BYTES`] in the order given, each summed in one collective and divided by the
    /// world size. Parameters without a gradient count as zero, so every rank sends the same
    /// buckets.
    pub fn average_gradients(&self, params: &[Tensor]) -> Result<()> {
        tch::no_grad(|| {
            let mut start = 0;
            while start < params.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < params.len() && (end == start || bytes + params[end].numel() * 4 <= BUCKET_BYTES) {
                    bytes += params[end].numel() * 4;
                    end += 1;
                }
                let grads: Vec<Tensor> = params[start..end]
                    .iter()
                    .map(|p| {
                        let g = p.grad();
                        if g.defined() {
                            g.flatten(0, -1)
                        } else {
                            p.zeros_like().flatten(0, -1)
                        }
                    })
                    .collect();
                let flat = Tensor::cat(&grads, 0);
                self.all_reduce_sum(&[&flat])?;
                let flat = flat / self.world as f64;
                let mut offset = 0;
                for p in &params[start..end] {
                    let n = p.numel() as i64;
                    let mut g = p.grad();
                    // A parameter this rank did not use keeps no gradient (the optimiser skips it).
                    if g.defined() {
                        g.copy_(&flat.narrow(0, offset, n).view_as(p));
                    }
                    offset += n;
                }
                start = end;
            }
            Ok(())
        })
    }

    /// Stores `value` under `key` in the rendezvous store.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let k = c_string("a store key", key)?;
        let mut err = vec![0 as c_char; ERR_LEN];
        // SAFETY: pointers valid for the call; the shim copies the bytes.
        let rc = unsafe { lits_store_set(self.raw.as_ptr(), k.as_ptr(), value.as_ptr(), value.len(), err.as_mut_ptr(), err.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.failed(&format!("storing {key}"), &err))
        }
    }

    /// Waits until every key of `keys` is in the store, for as long as every other rank is
    /// alive (no timeout: preparing a dataset for the first time may take an hour on one
    /// rank while the others wait); a rank that stops beating, or the store going away,
    /// ends the wait with an error naming it.
    pub fn wait_while_alive(&self, keys: &[String]) -> Result<()> {
        let mut polls = 0u32;
        for key in keys {
            let k = c_string("a store key", key)?;
            loop {
                let mut err = vec![0 as c_char; ERR_LEN];
                // SAFETY: pointers valid for the call.
                match unsafe { lits_store_check(self.raw.as_ptr(), k.as_ptr(), err.as_mut_ptr(), err.len()) } {
                    1 => break,
                    0 => {}
                    _ => return Err(self.failed(&format!("waiting for {key}"), &err)),
                }
                polls += 1;
                // Every 10 s, a look at the heartbeats (which takes LOST_RANK_WAIT).
                if polls.is_multiple_of(50) {
                    match self.lost_ranks() {
                        Some(lost) if lost.is_empty() => {}
                        _ => return Err(self.explain(&format!("waiting for {key}"), "a rank stopped while the others waited")),
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// [`Group::get`] after [`Group::wait_while_alive`].
    pub fn get_while_alive(&self, key: &str) -> Result<Vec<u8>> {
        self.wait_while_alive(&[key.to_owned()])?;
        self.get(key)
    }

    /// The value under `key`, waiting for a rank to store it (up to the timeout).
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let k = c_string("a store key", key)?;
        let mut err = vec![0 as c_char; ERR_LEN];
        let mut len = 0usize;
        // SAFETY: pointers valid for the call; a non-null result holds `len` bytes and is
        // released with lits_store_free.
        let p = unsafe { lits_store_get(self.raw.as_ptr(), k.as_ptr(), &mut len, err.as_mut_ptr(), err.len()) };
        if p.is_null() {
            return Err(self.failed(&format!("waiting for {key}"), &err));
        }
        // SAFETY: as above.
        let v = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
        // SAFETY: allocated by the shim's malloc.
        unsafe { lits_store_free(p) };
        Ok(v)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: the pointer came from lits_group_new and is freed once.
        unsafe { lits_group_free(self.raw.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_address_towards_loopback_is_loopback() {
        assert!(local_address_towards("127.0.0.1", 29500).unwrap().is_loopback());
        assert!(local_address_towards("no-such-host.invalid", 1).is_err());
    }

    #[test]
    fn a_group_of_one_reduces_broadcasts_and_differentiates_as_the_identity() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let g = Group::join(&JoinOptions {
            master_addr: "127.0.0.1".into(),
            master_port: port,
            rank: 0,
            world: 1,
            timeout: Duration::from_secs(30),
            interface: None,
            launcher_store: false,
            attempt: 0,
        })
        .unwrap();
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        g.all_reduce_sum(&[&t]).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.0, 2.0, 3.0]);
        g.broadcast(&t, 0).unwrap();
        g.barrier().unwrap();
        let x = Tensor::from_slice(&[2.0f32, 5.0]).set_requires_grad(true);
        let y = g.all_reduce_autograd(&(&x * &x)).unwrap();
        y.sum(tch::Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(&x.grad()).unwrap(), [4.0, 10.0]);
        g.set("k", b"value").unwrap();
        assert_eq!(g.get("k").unwrap(), b"value");
        assert_eq!(g.get_while_alive("k").unwrap(), b"value");
        assert_eq!(g.lost_ranks(), Some(vec![]));
    }

    /// Joins rank `r` of a group of two on a free loopback port (call from two threads).
    fn local_pair(timeout: Duration) -> impl Fn(usize) -> Group + Clone + Send + 'static {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        move |rank| {
            let opts = JoinOptions {
                master_addr: "127.0.0.1".into(),
                master_port: port,
                rank,
                world: 2,
                timeout,
                interface: None,
                launcher_store: false,
                attempt: 0,
            };
            Group::join(&opts).unwrap()
        }
    }

    /// A rank waits for another's slow preparation past the collective timeout, and stops
    /// waiting, naming it, when that rank goes away.
    #[test]
    fn waiting_while_alive_outlasts_the_timeout_and_ends_when_the_peer_is_gone() {
        let join = local_pair(Duration::from_secs(2));
        let join0 = join.clone();
        let zero = std::thread::spawn(move || {
            let g = join0(0);
            std::thread::sleep(Duration::from_secs(5));
            g.set("slow", b"ready").unwrap();
            g.wait_while_alive(&["done".to_owned()]).unwrap();
            // Rank 0 leaves, and the store it serves goes with it.
        });
        let g = join(1);
        assert_eq!(g.get_while_alive("slow").unwrap(), b"ready");
        g.set("done", b"").unwrap();
        zero.join().unwrap();
        let e = g.get_while_alive("never").unwrap_err().to_string();
        assert!(e.contains("rank 0 is gone"), "{e}");
    }

    /// Two ranks as two threads of one process: sums, broadcast, the gradient of a loss
    /// summed over the ranks, and a lost rank named by the one left.
    #[test]
    fn two_ranks_sum_broadcast_differentiate_and_name_a_lost_rank() {
        let join = local_pair(Duration::from_secs(20));
        let (tx, rx) = std::sync::mpsc::channel();
        let join1 = join.clone();
        let other = std::thread::spawn(move || {
            let g = join1(1);
            let t = Tensor::from_slice(&[10.0f32, 20.0]);
            g.all_reduce_sum(&[&t]).unwrap();
            let b = Tensor::from_slice(&[0.0f32]);
            g.broadcast(&b, 0).unwrap();
            // loss_1 = 3 · Σ_r x_r²
            let x = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
            (g.all_reduce_autograd(&(&x * &x)).unwrap() * 3.0).sum(tch::Kind::Float).backward();
            g.barrier().unwrap();
            tx.send((Vec::<f32>::try_from(&t).unwrap(), f32::try_from(&b).unwrap(), f32::try_from(&x.grad()).unwrap())).unwrap();
            // Rank 1 leaves without a word: its heartbeat stops with its group.
            drop(g);
        });
        let g = join(0);
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        g.all_reduce_sum(&[&t]).unwrap();
        let b = Tensor::from_slice(&[7.0f32]);
        g.broadcast(&b, 0).unwrap();
        // loss_0 = 1 · Σ_r x_r²; d(loss_0 + loss_1)/d(x_0) = (1 + 3) · 2 · x_0.
        let x = Tensor::from_slice(&[2.0f32]).set_requires_grad(true);
        g.all_reduce_autograd(&(&x * &x)).unwrap().sum(tch::Kind::Float).backward();
        g.barrier().unwrap();
        let (t1, b1, grad1) = rx.recv().unwrap();
        other.join().unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [11.0, 22.0]);
        assert_eq!(t1, [11.0, 22.0]);
        assert_eq!(b1, 7.0);
        assert_eq!(f32::try_from(&x.grad()).unwrap(), 16.0);
        assert_eq!(grad1, 24.0);
        let e = g.all_reduce_sum(&[&t]).unwrap_err().to_string();
        assert!(e.contains("rank 0: all-reduce failed: lost rank 1 of 2"), "{e}");
    }
}
