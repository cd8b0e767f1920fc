"""The scheduler side of the connector, without vLLM: which tokens kvtierd
holds for a request, the lease that keeps them until they are loaded, and
each step's plan of blocks to load and to save.

One KvtierScheduler per engine, called from vLLM's scheduler thread only
(not thread-safe). It talks to kvtierd only through `client.lookup` and
`client.release`.

A request's life:
  1. match(): BatchLookup of the prompt in every TP rank's namespace, with a
     lease and the key of every full prompt block. The hit is the run all
     ranks hold, in whole kvtier blocks, short of the prompt's last token
     (vLLM must compute at least one); what exceeds vLLM's own prefix hit
     is returned. A repeated match() (vLLM asks again when it could not
     schedule the request) releases the previous lease first.
  2. allocated(): vLLM says how many of those tokens it will load (0 drops
     the lease at once).
  3. build(): once the request is scheduled, a BlockLoad hands the blocks,
     vLLM block ids and the leases to the workers, which load and then
     release them; and each step, every prompt block that became full and
     is not known to be in kvtierd gets a BlockSave (with the request's TTL).
  4. finished(): any lease not yet handed over is released.

Saves wait for the loads they read. A block computed in a step is computed
on the KV loaded for that step; if a load failed (on any TP rank), vLLM
computed it on blocks that hold nothing, and it would be published under a
right key with wrong bytes, which kvtierd then keeps (it keeps a key's
first version). So no save is planned for a request that holds a vLLM
block loaded in a step whose outcome is not known yet (the loading request
itself, and any request vLLM let share those blocks); the blocks wait in
`saved_blocks` and are planned once step_done() reports the step. A failed
load's blocks (vLLM's invalid_block_ids, the union over ranks) move every
request that holds one back to the block before it: vLLM recomputes from
there, and those blocks are published once recomputed.
"""
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set

from kvtier import Namespace, errors

from .block_layout import BlockMapping
from .ttl import TtlClasses, UnknownTtlClass

log = logging.getLogger("kvtier_vllm")


@dataclass
class RequestInfo:
    """What the scheduler side needs of a vLLM Request."""
    request_id: str
    prompt_token_ids: Sequence[int]
    num_tokens: int                       # prompt and output so far
    kv_transfer_params: Optional[Mapping] = None
    cache_salt: Optional[str] = None      # vLLM's per-request cache_salt
    cacheable: bool = True                # False: multimodal, LoRA or embeddings input


@dataclass
class BlockLoad:
    """Copy kvtier blocks into a request's vLLM blocks (worker side)."""
    request_id: str
    cache_salt: Optional[str]
    keys: List[List[bytes]]               # by TP rank: the blocks, in token order
    vllm_block_ids: List[List[Optional[int]]]  # per block its vLLM ids; None: vLLM has it
    lease_ids: List[Optional[str]]        # by TP rank; that rank releases it after loading

    @property
    def num_vllm_blocks(self):
        """vLLM blocks this load writes."""
        return sum(1 for ids in self.vllm_block_ids for b in ids if b is not None)


@dataclass
class BlockSave:
    """Publish full prompt blocks of a request (worker side)."""
    request_id: str
    cache_salt: Optional[str]
    keys: List[List[bytes]]               # by TP rank
    parent_keys: List[List[Optional[bytes]]]  # by TP rank; None for a prompt's first block
    vllm_block_ids: List[List[int]]       # per block its vLLM ids
    ttl_seconds: int


@dataclass
class StepPlan:
    step: int = 0                         # build()'s count; step_done() names it back
    loads: List[BlockLoad] = field(default_factory=list)
    saves: List[BlockSave] = field(default_factory=list)


@dataclass
class ScheduledRequest:
    """One request of vLLM's SchedulerOutput, as build() needs it."""
    request_id: str
    num_computed_tokens: int              # before this step (local and loaded)
    new_block_ids: Optional[List[int]]    # the first KV group's new block ids
    replaces_block_ids: bool              # new request or resumed: the ids are all of them


@dataclass
class SchedulerStats:
    lookups: int = 0
    lookup_errors: int = 0
    lookups_skipped: int = 0    # requests served without a lookup: kvtierd failed just before
    lookup_s: float = 0.0       # wall time in lookups
    matched_tokens: int = 0     # tokens beyond vLLM's own hit that kvtierd offered
    loaded_tokens: int = 0      # of those, tokens handed to the workers to load
    saved_blocks: int = 0       # blocks handed to the workers to publish
    held_saves: int = 0         # times a request's saves waited for a load's outcome
    failed_loads: int = 0       # requests moved back by a failed load (vLLM recomputes)


@dataclass
class _RequestState:
    info: RequestInfo
    keys: List[List[bytes]]          # by rank: every full prompt block's key
    hit_blocks: int                  # leading blocks every rank holds
    lease_ids: List[Optional[str]]   # by rank; None when none or handed over
    local_tokens: int = 0            # vLLM's own hit when matched
    load_tokens: int = 0             # tokens to load once scheduled
    block_ids: List[int] = field(default_factory=list)
    saved_blocks: int = 0            # leading blocks known to be in kvtierd
    ttl_seconds: Optional[int] = None  # None: publish nothing
    hit_tiers: List[str] = field(default_factory=list)  # rank 0's hit blocks' tiers


class KvtierScheduler:
    def __init__(self, client, mapping: BlockMapping,
                 namespace_for: Callable[[int, Optional[str]], Namespace], tp_size: int,
                 ttl: TtlClasses, lease_ms: int, load: bool = True, save: bool = True,
                 lookup_timeout_s: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic):
        """`namespace_for(tp_rank, request_salt)` gives the namespace of a
        rank for a request; `load`/`save` follow vLLM's kv_role (kv_consumer
        only loads, kv_producer only saves). Lookups and releases run on
        vLLM's scheduler thread, which every running request waits for: they
        have their own deadline (`lookup_timeout_s`; None: the client's), and
        after a failed lookup requests are served without kvtierd, asking it
        nothing, for a back-off of 1 s that doubles with each further failure
        up to 32 s, until a lookup succeeds."""
        self._client = client
        self._mapping = mapping
        self._namespace_for = namespace_for
        self._tp_size = tp_size
        self._ttl = ttl
        self._lease_ms = lease_ms
        self._load = load
        self._save = save
        self._requests: Dict[str, _RequestState] = {}
        self._lookup_timeout_s = lookup_timeout_s
        self._clock = clock
        self._backoff_s = 0.0      # after the last failure; 0 when the last lookup worked
        self._down_until = 0.0     # clock() before which nothing is asked
        self._step = 0
        # Steps whose loads' outcome is not known yet -> the vLLM blocks they load.
        self._loading: Dict[int, Set[int]] = {}
        self.stats = SchedulerStats()

    @property
    def block_tokens(self):
        return self._mapping.kvtier_block_tokens

    def match(self, req: RequestInfo, num_computed_tokens: int) -> int:
        """Tokens beyond vLLM's own `num_computed_tokens` that kvtierd holds
        and the workers will load (0 when none). Takes a lease on the hit."""
        old = self._requests.pop(req.request_id, None)
        if old is not None:
            self._release(old)
        if not req.cacheable or not (self._load or self._save):
            return 0
        state = self._lookup(req)
        if state is None:
            return 0
        if old is not None:
            state.saved_blocks = max(old.saved_blocks, state.hit_blocks)
        self._requests[req.request_id] = state
        t = self.block_tokens
        # vLLM computes at least the last token itself.
        loadable = min(state.hit_blocks * t, (req.num_tokens - 1) // t * t)
        new_tokens = max(0, loadable - num_computed_tokens) if self._load else 0
        state.local_tokens = num_computed_tokens
        state.load_tokens = new_tokens
        if new_tokens == 0:
            self._release(state)
        self.stats.matched_tokens += new_tokens
        return new_tokens

    def _lookup(self, req: RequestInfo) -> Optional[_RequestState]:
        if self._clock() < self._down_until:
            self.stats.lookups_skipped += 1
            return None
        keys, hits, leases, tiers = [], [], [], []
        tokens = list(req.prompt_token_ids)
        start = time.monotonic()
        try:
            for rank in range(self._tp_size):
                self.stats.lookups += 1
                r = self._client.lookup(
                    token_ids=tokens, lease_ms=self._lease_ms if self._load else 0,
                    return_keys=True, namespace=self._namespace_for(rank, req.cache_salt),
                    timeout=self._lookup_timeout_s)
                keys.append(list(r.keys))
                hits.append(r.hit_blocks)
                leases.append(r.lease_id)
                tiers.append([h.tier for h in r.hits])
        except errors.KvtierError as e:
            # kvtierd down or refusing: serve the request without it, and
            # the next ones too for a while.
            self.stats.lookup_errors += 1
            self._backoff_s = min(32.0, 2 * self._backoff_s) if self._backoff_s else 1.0
            self._down_until = self._clock() + self._backoff_s
            if isinstance(e, errors.InvalidArgument):
                # Not kvtierd being down: this connector's settings, every time.
                log.error("kvtier: kvtierd refused the lookup of request %s as invalid (is "
                          "lease_ms %d above its --max-lease-ms?); requests are served without "
                          "kvtier until this is fixed: %s", req.request_id, self._lease_ms, e)
            else:
                log.warning("kvtier: lookup of request %s failed, computing it (and asking "
                            "kvtierd nothing for %g s): %s", req.request_id, self._backoff_s, e)
            for lease_id in leases:
                self._release_lease(lease_id)
            return None
        finally:
            self.stats.lookup_s += time.monotonic() - start
        self._backoff_s = 0.0
        ttl_seconds = None
        if self._save:
            try:
                ttl_seconds = self._ttl.for_request(req.kv_transfer_params)
            except UnknownTtlClass as e:
                log.error("kvtier: request %s: %s; its blocks are not published",
                          req.request_id, e)
        hit = min(hits)
        return _RequestState(info=req, keys=keys, hit_blocks=hit, lease_ids=leases,
                             saved_blocks=hit, ttl_seconds=ttl_seconds, hit_tiers=tiers[0])

    def allocated(self, request_id: str, num_external_tokens: int):
        """vLLM allocated blocks for the request and will load
        `num_external_tokens` of the matched tokens."""
        state = self._requests.get(request_id)
        if state is None:
            return
        state.load_tokens = num_external_tokens
        if num_external_tokens == 0:
            self._release(state)

    def load_tiers(self, request_id: str) -> Dict[str, int]:
        """Where the tokens a request is about to load live in kvtierd:
        {tier ("dram", "flash", ...): tokens}, from its lookup."""
        state = self._requests.get(request_id)
        if state is None or state.load_tokens == 0:
            return {}
        t = self.block_tokens
        start, end = state.local_tokens, state.local_tokens + state.load_tokens
        out: Dict[str, int] = {}
        for block in range(start // t, -(-end // t)):
            tier = state.hit_tiers[block] if block < len(state.hit_tiers) else ""
            # A block partly held by vLLM already counts only its new tokens.
            n = min(end, (block + 1) * t) - max(start, block * t)
            out[tier] = out.get(tier, 0) + n
        return out

    def build(self, scheduled: Sequence[ScheduledRequest],
              num_scheduled_tokens: Mapping[str, int]) -> StepPlan:
        """This step's loads and saves. Hands leases over to the workers."""
        self._step += 1
        plan = StepPlan(step=self._step)
        states = []
        for s in scheduled:
            state = self._requests.get(s.request_id)
            if state is None:
                continue
            if s.replaces_block_ids:
                state.block_ids = list(s.new_block_ids or [])
            elif s.new_block_ids:
                state.block_ids.extend(s.new_block_ids)
            if state.load_tokens > 0:
                plan.loads.append(self._plan_load(state))
            states.append((s, state))
        if plan.loads:
            self._loading[plan.step] = {b for load in plan.loads
                                        for ids in load.vllm_block_ids for b in ids
                                        if b is not None}
        loading = set().union(*self._loading.values()) if self._loading else set()
        for s, state in states:
            if loading and not loading.isdisjoint(state.block_ids):
                self.stats.held_saves += 1
                continue  # planned once the loads it reads are known good
            computed = s.num_computed_tokens + num_scheduled_tokens.get(s.request_id, 0)
            save = self._plan_save(state, computed)
            if save is not None:
                plan.saves.append(save)
        return plan

    def step_done(self, step: Optional[int], invalid_block_ids: Set[int]):
        """The workers finished step `step` (and every step before it; None:
        a step they did not name); `invalid_block_ids` are the vLLM blocks
        whose load failed on any rank. A request holding one goes back to
        the kvtier block before it: vLLM recomputes from there, and those
        blocks are saved then."""
        if step is not None:
            for done in [k for k in self._loading if k <= step]:
                del self._loading[done]
        if not invalid_block_ids:
            return
        per = self._mapping.vllm_blocks_per_block
        for state in self._requests.values():
            first = next((i for i, b in enumerate(state.block_ids) if b in invalid_block_ids),
                         None)
            if first is not None and first // per < state.saved_blocks:
                state.saved_blocks = first // per
                self.stats.failed_loads += 1

    def _plan_load(self, state: _RequestState) -> BlockLoad:
        m = self._mapping
        n = m.vllm_block_tokens
        start, end = state.local_tokens, state.local_tokens + state.load_tokens
        first, last = start // m.kvtier_block_tokens, end // m.kvtier_block_tokens
        ids = []
        for j in range(first, last):
            block = m.vllm_block_ids(j, state.block_ids)
            base = j * m.vllm_blocks_per_block
            ids.append([b if (base + k) * n >= start else None for k, b in enumerate(block)])
        load = BlockLoad(request_id=state.info.request_id, cache_salt=state.info.cache_salt,
                         keys=[k[first:last] for k in state.keys], vllm_block_ids=ids,
                         lease_ids=state.lease_ids)
        state.lease_ids = [None] * len(state.lease_ids)
        state.saved_blocks = max(state.saved_blocks, last)
        self.stats.loaded_tokens += state.load_tokens
        state.load_tokens = 0
        return load

    def _plan_save(self, state: _RequestState, computed_tokens: int) -> Optional[BlockSave]:
        if state.ttl_seconds is None:
            return None
        full = min(self._mapping.full_blocks(computed_tokens), len(state.keys[0]))
        if full <= state.saved_blocks:
            return None
        blocks = range(state.saved_blocks, full)
        save = BlockSave(
            request_id=state.info.request_id, cache_salt=state.info.cache_salt,
            keys=[k[state.saved_blocks:full] for k in state.keys],
            parent_keys=[[k[j - 1] if j > 0 else None for j in blocks] for k in state.keys],
            vllm_block_ids=[self._mapping.vllm_block_ids(j, state.block_ids) for j in blocks],
            ttl_seconds=state.ttl_seconds)
        self.stats.saved_blocks += len(blocks)
        state.saved_blocks = full
        return save

    def leases(self, request_id: str) -> List[str]:
        """The leases a request holds that no worker has been handed yet."""
        state = self._requests.get(request_id)
        return [] if state is None else [x for x in state.lease_ids if x is not None]

    def finished(self, request_id: str):
        """The request is done (or aborted): release what it still holds."""
        state = self._requests.pop(request_id, None)
        if state is not None:
            self._release(state)

    def close(self):
        for request_id in list(self._requests):
            self.finished(request_id)

    def _release(self, state: _RequestState):
        for lease_id in state.lease_ids:
            self._release_lease(lease_id)
        state.lease_ids = [None] * len(state.lease_ids)

    def _release_lease(self, lease_id):
        if lease_id is None:
            return
        try:
            self._client.release(lease_id, timeout=self._lookup_timeout_s)
        except errors.NotFound:
            pass  # expired already
        except errors.KvtierError as e:
            log.warning("kvtier: releasing lease %s failed (it expires by itself): %s",
                        lease_id, e)
