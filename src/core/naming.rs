//! Engine names `<prefix>-N`: the lowest free ordinal over live, reserved and dying numbers.
//!
//! A number is reusable only after Docker confirmed its container gone (`gone`), so a create never
//! races Docker's asynchronous removal with a 409.

/// `acestream-12` with prefix `acestream` -> `Some(12)`; anything else -> `None`.
pub fn parse_ordinal(prefix: &str, name: &str) -> Option<u32> {
    let _ = (prefix, name);
    todo!("cores helper")
}

/// `(acestream, 12)` -> `acestream-12`.
pub fn engine_name(prefix: &str, ordinal: u32) -> String {
    format!("{prefix}-{ordinal}")
}

/// The ordinal book-keeping of one prefix.
#[derive(Clone, Debug, Default)]
pub struct Ordinals {}

impl Ordinals {
    pub fn new() -> Self {
        Ordinals::default()
    }

    /// Marks numbers held by containers that exist (seeded from Docker at start, or adopted).
    pub fn mark_live(&mut self, n: u32) {
        let _ = n;
        todo!()
    }

    /// Reserves and returns the lowest free number (>= 1).
    pub fn reserve(&mut self) -> u32 {
        todo!()
    }

    /// A reserved number's container now exists.
    pub fn confirm(&mut self, n: u32) {
        let _ = n;
        todo!()
    }

    /// A reserved number's create failed and no container holds it: free again.
    pub fn release(&mut self, n: u32) {
        let _ = n;
        todo!()
    }

    /// Removal of the container holding `n` started: not reusable until `gone`.
    pub fn removing(&mut self, n: u32) {
        let _ = n;
        todo!()
    }

    /// Docker confirmed no container holds `n`: free again.
    pub fn gone(&mut self, n: u32) {
        let _ = n;
        todo!()
    }

    /// Numbers held (live + reserved + dying).
    pub fn held(&self) -> usize {
        todo!()
    }

    pub fn is_free(&self, n: u32) -> bool {
        let _ = n;
        todo!()
    }
}
