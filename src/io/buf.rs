//! Aligned buffers and the fixed pool they come from.
//!
//! O_DIRECT needs the buffer address, the length and the file offset aligned to the logical
//! block size; [`ALIGN`] (4096) covers every device troika runs on. A [`BufferPool`] allocates
//! all its buffers up front so the data path never allocates per request: taking a buffer
//! blocks (or fails, with `try_take`) when all are in use, which bounds memory.

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

/// Alignment of every buffer handed to the device layer (address and length).
pub const ALIGN: usize = 4096;

/// Heap memory aligned to [`ALIGN`], zeroed at creation, whose length is a multiple of
/// [`ALIGN`]. Owns its memory like a `Box<[u8]>`.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: Send is sound because an AlignedBuf uniquely owns its allocation, like Box<[u8]>; nothing else
// holds the pointer, so moving it to another thread moves sole access with it.
unsafe impl Send for AlignedBuf {}
// SAFETY: Sync is sound because shared references only give out `&[u8]`; mutation needs `&mut self`, so the
// usual borrow rules prevent data races exactly as for Box<[u8]>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes aligned to [`ALIGN`].
    ///
    /// # Panics
    /// If `len` is zero or not a multiple of [`ALIGN`] (a programming error), or the
    /// allocation fails.
    pub fn new(len: usize) -> AlignedBuf {
        assert!(
            len > 0 && len.is_multiple_of(ALIGN),
            "AlignedBuf length {len} is not a positive multiple of {ALIGN}"
        );
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (asserted above) and a valid power-of-two
        // alignment, as alloc_zeroed requires.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        match Layout::from_size_align(len, ALIGN) {
            Ok(layout) => layout,
            Err(_) => panic!("AlignedBuf length {len} overflows when aligned"),
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to `len` initialised (zeroed at creation) bytes owned by self
        // and alive until drop; the shared borrow of self keeps them from being mutated.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; the exclusive borrow of self makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated in `new` with exactly this layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

/// A fixed number of equal-size [`AlignedBuf`]s, allocated when the pool is made.
pub struct BufferPool {
    free: Mutex<Vec<AlignedBuf>>,
    returned: Condvar,
    buf_len: usize,
}

impl BufferPool {
    /// Allocates `count` buffers of `buf_len` bytes (a multiple of [`ALIGN`]).
    pub fn new(count: usize, buf_len: usize) -> Arc<BufferPool> {
        let free = (0..count).map(|_| AlignedBuf::new(buf_len)).collect();
        Arc::new(BufferPool {
            free: Mutex::new(free),
            returned: Condvar::new(),
            buf_len,
        })
    }

    /// Takes a buffer, waiting until one is returned if all are in use.
    pub fn take(self: &Arc<Self>) -> PooledBuf {
        let mut free = self.free.lock();
        loop {
            if let Some(buf) = free.pop() {
                return self.wrap(buf);
            }
            self.returned.wait(&mut free);
        }
    }

    /// Takes a buffer if one is free now.
    pub fn try_take(self: &Arc<Self>) -> Option<PooledBuf> {
        let buf = self.free.lock().pop()?;
        Some(self.wrap(buf))
    }

    /// Length of every buffer in the pool.
    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// Buffers free right now.
    pub fn available(&self) -> usize {
        self.free.lock().len()
    }

    fn wrap(self: &Arc<Self>, buf: AlignedBuf) -> PooledBuf {
        PooledBuf {
            buf: Some(buf),
            pool: Arc::clone(self),
        }
    }

    fn give_back(&self, buf: AlignedBuf) {
        self.free.lock().push(buf);
        self.returned.notify_one();
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("buf_len", &self.buf_len)
            .field("available", &self.available())
            .finish()
    }
}

/// A buffer on loan from a [`BufferPool`]; it goes back to the pool when dropped. Its
/// contents are whatever the previous user left.
pub struct PooledBuf {
    /// Always `Some` until drop hands it back.
    buf: Option<AlignedBuf>,
    pool: Arc<BufferPool>,
}

impl PooledBuf {
    fn inner(&self) -> &AlignedBuf {
        match &self.buf {
            Some(buf) => buf,
            None => unreachable!("a PooledBuf holds its buffer until drop"),
        }
    }
}

impl Deref for PooledBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.inner()
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Some(buf) => buf,
            None => unreachable!("a PooledBuf holds its buffer until drop"),
        }
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give_back(buf);
        }
    }
}

impl std::fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuf")
            .field("len", &self.inner().len())
            .finish()
    }
}
