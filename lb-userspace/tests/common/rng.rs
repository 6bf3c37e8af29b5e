//! The fuzz tests' random numbers.

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
    #[allow(dead_code)] // the packet fuzz only
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}
