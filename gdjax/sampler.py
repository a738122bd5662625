"""Mini-batch sampling without replacement at O(batch) cost per step.

An epoch visits the examples in the order of a keyed pseudo-random bijection of `[0, n)`: an
alternating Feistel network (each round XORs one half with a keyed function of the other; the halves
may differ by one bit, as in the FFX format-preserving scheme) on the smallest power-of-two domain
that holds `n`, with cycle-walking (re-apply the permutation while the image lies outside `[0, n)`)
to restrict it to `[0, n)` (Black & Rogaway, "Ciphers with arbitrary finite domains", CT-RSA 2002).
The domain is below `2n`, so an element needs fewer than 2 passes on average; under `vmap` every
lane waits for the slowest of all the lanes' batch elements, which is why the domain is kept tight
(on an even-bit domain, up to `4n`, a 256-lane sweep took about three times as many passes). With an
even number of bits the network is the balanced Feistel network with swapped halves. Step `t` of a run
takes positions `j * batch_size, ..., (j + 1) * batch_size - 1` of epoch `e`, where
`e, j = divmod(t, n // batch_size)`; the last `n % batch_size` positions of an epoch are left out of it
(the next epoch's order differs, so no example is left out twice in a row by construction).

Only the batch's positions are evaluated: no `n`-element permutation is ever built or sorted, so a step
costs O(batch_size) and so does the first step of an epoch. The order depends only on the key, `n` and
the batch size, never on the optimizer, so two rules given one seed see the same batches (paired
comparisons); it is a pure function of arrays and vmaps over keys.

Round keys of epoch `e` come from the key's data and `e` through the same integer finaliser as the
round function (`_round_keys`): a few integer operations per step instead of a threefry call, which
costs more than the rest of a small step. The key is used as raw bits, so any `jax.random` key works.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

ROUNDS = 6  # Luby-Rackoff: 4 rounds give a pseudo-random permutation; 6 for margin on a weak round function
MAX_EXAMPLES = 2**31 - 1  # positions are int32 inside the program


def _split_bits(n: int) -> tuple[int, int]:
    """`(left, right)` bits of the Feistel halves: `2**(left + right)` is the smallest power of two
    >= n (at least 2), and the right half has the extra bit of an odd width."""
    bits = max(int(n - 1).bit_length(), 1)
    return bits // 2, bits - bits // 2


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit integer finaliser (murmur3's fmix32): every input bit affects every output bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _feistel(x: jax.Array, round_keys: jax.Array, bits: tuple[int, int]) -> jax.Array:
    """One pass of the alternating Feistel network over `[0, 2**(left + right))`: each round XORs one
    half with a keyed function of the other, so each round (and the pass) is a bijection."""
    left_bits, right_bits = bits
    left_mask, right_mask = jnp.uint32((1 << left_bits) - 1), jnp.uint32((1 << right_bits) - 1)
    left, right = x >> right_bits, x & right_mask
    for r in range(ROUNDS):
        if r % 2 == 0:
            left = left ^ (_mix(right ^ round_keys[r]) & left_mask)
        else:
            right = right ^ (_mix(left ^ round_keys[r]) & right_mask)
    return (left << right_bits) | right


_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: spreads consecutive counters over the 32 bits


def _round_keys(key: jax.Array, epoch: jax.Array) -> jax.Array:
    """`ROUNDS` 32-bit round keys of `epoch` for `key`: every key bit and epoch bit affects each."""
    words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    h = _mix(jnp.asarray(epoch).astype(jnp.uint32) * jnp.uint32(_GOLDEN) + jnp.uint32(1))
    for w in range(words.shape[0]):
        h = _mix(h ^ words[w])
    r = jnp.arange(1, ROUNDS + 1, dtype=jnp.uint32) * jnp.uint32(_GOLDEN)
    return _mix(_mix(h ^ r) + r)


def permute(positions: jax.Array, key: jax.Array, n: int, epoch: jax.Array | int = 0) -> jax.Array:
    """The images of `positions` (int, each in `[0, n)`) under the bijection of `[0, n)` keyed by
    `key` and `epoch`.

    Cycle-walking needs a data-dependent number of passes: fewer than `2n / n = 2` on average per
    element (the domain is below `2n`), done for the whole batch at once in a `lax.while_loop`.
    """
    bits = _split_bits(n)
    round_keys = _round_keys(key, epoch)
    x = _feistel(positions.astype(jnp.uint32), round_keys, bits)
    bound = jnp.uint32(n)
    x = jax.lax.while_loop(
        lambda x: jnp.any(x >= bound),
        lambda x: jnp.where(x >= bound, _feistel(x, round_keys, bits), x),
        x,
    )
    return x.astype(jnp.int32)


def batch_indices(key: jax.Array, step: jax.Array, n: int, batch_size: int) -> jax.Array:
    """Example indices of the batch of step `step` (see the module docstring): `(batch_size,)` int32."""
    per_epoch = n // batch_size
    epoch, j = jnp.divmod(step, per_epoch)
    positions = j * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    return permute(positions, key, n, epoch)


def epoch_order(key: jax.Array, epoch: int, n: int) -> np.ndarray:
    """The whole visiting order of one epoch, on the host (for tests and inspection)."""
    return np.asarray(permute(jnp.arange(n, dtype=jnp.int32), key, n, epoch))


__all__ = ["MAX_EXAMPLES", "ROUNDS", "batch_indices", "epoch_order", "permute"]
