"""KvtierConnector: vLLM's KVConnectorBase_V1 (vLLM 0.32.0) over kvtierd.

A thin adapter: it turns vLLM's objects into plain values and calls
KvtierScheduler (scheduler process) or KvtierWorker (each worker), which do
the work. docs/vllm.md says how to run it and what it supports.

Loads are synchronous: start_load_kv() copies every leased block into the
paged KV before the forward starts, so wait_for_layer_load() has nothing to
wait for. Saves are packed layer by layer in save_kv_layer() (and in
wait_for_save() for layers vLLM did not report) into the worker's own
staging copy, which a background thread publishes: vLLM may free or reuse
its blocks as soon as the step ends.
"""
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import torch

from kvtier import KvtierClient
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorWorkerMetadata,
)
from vllm.v1.kv_cache_interface import FullAttentionSpec, MLAAttentionSpec
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from .block_layout import BlockMapping, CpuPagedKv
from .config import KV_DTYPES, ConfigError, ConnectorConfig, EngineNamespace
from .scheduler import KvtierScheduler, RequestInfo, ScheduledRequest, StepPlan
from .worker import KvtierWorker

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

log = logging.getLogger("kvtier_vllm")


def _log_through_vllm():
    """vLLM configures only its own "vllm" logger; without its handlers the
    "kvtier_vllm" logger's INFO lines would be dropped."""
    theirs = logging.getLogger("vllm")
    if not log.handlers and theirs.handlers:
        for handler in theirs.handlers:
            log.addHandler(handler)
        log.setLevel(theirs.level)
        log.propagate = False


_log_through_vllm()

# kvtierd's tier names -> vLLM's cache-hit sources (its metric
# vllm:prompt_tokens_cached_by_source). Others (kvtierd's own "hbm") count as
# external_unspecified.
_TIER_SOURCES = {"dram": CacheHitSource.HOST, "flash": CacheHitSource.DISK,
                 "rocks": CacheHitSource.DISK}


@dataclass
class KvtierConnectorMetadata(KVConnectorMetadata):
    plan: StepPlan


@dataclass
class KvtierWorkerMetadata(KVConnectorWorkerMetadata):
    """Back to the scheduler after each step: which step the workers
    finished (its failed loads travel in vLLM's invalid_block_ids)."""
    step: int

    def aggregate(self, other: "KVConnectorWorkerMetadata") -> "KvtierWorkerMetadata":
        if not isinstance(other, KvtierWorkerMetadata):
            return self
        return KvtierWorkerMetadata(step=min(self.step, other.step))


def _attention_spec(kv_cache_config: "KVCacheConfig"):
    """The one full-attention KV group this connector can carry, or a
    ConfigError saying what the model has instead."""
    groups = kv_cache_config.kv_cache_groups if kv_cache_config is not None else []
    if len(groups) != 1:
        raise ConfigError(
            f"kvtier_vllm carries models with one KV cache group (full attention in every "
            f"layer); this one has {len(groups)} (hybrid, sliding-window or Mamba layers)")
    spec = groups[0].kv_cache_spec
    if not isinstance(spec, FullAttentionSpec) or isinstance(spec, MLAAttentionSpec):
        raise ConfigError(f"kvtier_vllm carries full attention KV; this model's is "
                          f"{type(spec).__name__}")
    if spec.sliding_window is not None or spec.attention_chunk_size is not None:
        raise ConfigError("kvtier_vllm does not carry sliding-window or chunked attention KV")
    if spec.head_size_v != spec.head_size or spec.num_head_slots is not None \
            or spec.state_content_bytes is not None or spec.page_size_padded is not None:
        raise ConfigError("kvtier_vllm reads dense K/V pages with one head size; this "
                          "model's KV pages are packed differently")
    return groups[0], spec


def _kv_dtype(spec) -> str:
    name = str(spec.dtype).removeprefix("torch.")
    if name not in KV_DTYPES:
        raise ConfigError(f"kvtierd holds f32, f16 and bf16 KV; this engine's KV cache is "
                          f"{name} (--kv-cache-dtype fp8 is not supported)")
    return KV_DTYPES[name]


class KvtierConnector(KVConnectorBase_V1):
    """kvtierd as vLLM's external prefix cache (kv_role kv_both, kv_producer
    to only publish, kv_consumer to only load)."""

    @property
    def requires_kv_delivery(self) -> bool:
        return False  # a dropped save is a future miss, nothing more

    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole,
                 kv_cache_config: "KVCacheConfig" = None):
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        tc = self._kv_transfer_config
        self._config = ConnectorConfig.from_extra_config(tc.kv_connector_extra_config)
        group, spec = _attention_spec(kv_cache_config)
        self._layer_names = list(group.layer_names)
        self._head_size = spec.head_size
        self._dtype_bytes = torch.tensor([], dtype=spec.dtype).element_size()
        parallel = vllm_config.parallel_config
        if parallel.pipeline_parallel_size != 1:
            raise ConfigError("kvtier_vllm does not support pipeline parallelism yet")
        self._mapping = BlockMapping(self._config.block_tokens or spec.block_size,
                                     spec.block_size)
        model = vllm_config.model_config
        self._namespace = EngineNamespace(
            model_id=self._config.model_id or model.model,
            model_revision=self._config.model_revision or (model.revision or ""),
            kv_dtype=_kv_dtype(spec), block_tokens=self._mapping.kvtier_block_tokens,
            tp_size=parallel.tensor_parallel_size, cache_salt=self._config.cache_salt)
        self._client = KvtierClient(self._config.addr, api_key=self._config.api_key,
                                    timeout=self._config.timeout_s)
        self._scheduler: Optional[KvtierScheduler] = None
        self._worker: Optional[KvtierWorker] = None
        self._layer_index: Dict[str, int] = {}
        self._load_errors: set = set()
        self._step_done: Optional[int] = None  # the last step this worker ran
        if role == KVConnectorRole.SCHEDULER:
            if getattr(tc, "kv_load_failure_policy", "recompute") != "recompute":
                log.warning("kvtier: kv_load_failure_policy is %r: a block kvtierd lost (or "
                            "that failed its checksum) fails its request; set it to "
                            "\"recompute\" to compute such blocks instead",
                            tc.kv_load_failure_policy)
            self._scheduler = KvtierScheduler(
                self._client, self._mapping, self._namespace.for_rank,
                tp_size=parallel.tensor_parallel_size, ttl=self._config.ttl,
                lease_ms=self._config.lease_ms, load=tc.is_kv_consumer, save=tc.is_kv_producer,
                lookup_timeout_s=self._config.lookup_timeout_s)
        log.info("kvtier: %s connector for kvtierd at %s: model %r, %s KV, kvtier blocks of %d "
                 "tokens = %d vLLM blocks of %d, TP size %d", role.name.lower(),
                 self._config.addr, self._namespace.model_id, self._namespace.kv_dtype,
                 self._mapping.kvtier_block_tokens, self._mapping.vllm_blocks_per_block,
                 self._mapping.vllm_block_tokens, parallel.tensor_parallel_size)

    # ---- worker side -------------------------------------------------

    def register_kv_caches(self, kv_caches: Dict[str, torch.Tensor]):
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank
        from vllm.model_executor.models.utils import extract_layer_index

        names = sorted((n for n in self._layer_names if n in kv_caches), key=extract_layer_index)
        if not names:
            raise ConfigError("vLLM registered no KV tensor of the attention layers")
        seen, layers = set(), []
        for name in names:
            tensor = kv_caches[name]
            if tensor.device.type != "cpu":
                raise ConfigError(
                    f"kvtier_vllm reads vLLM's CPU attention KV (CPU_ATTN); layer {name} is on "
                    f"{tensor.device} (GPU backends are not supported yet)")
            if tensor.data_ptr() in seen:
                continue  # a layer sharing another's KV: carried once
            seen.add(tensor.data_ptr())
            self._layer_index[name] = len(layers)
            layers.append(tensor.view(torch.uint8).numpy())
        kv = CpuPagedKv(layers, self._mapping.vllm_block_tokens, self._head_size,
                        self._dtype_bytes)
        self._worker = KvtierWorker(self._client, kv, self._mapping, self._namespace.for_rank,
                                    tp_rank=get_tensor_model_parallel_rank(),
                                    shm_bytes=self._config.shm_bytes)
        log.info("kvtier: worker of TP rank %d: %d layers, %d bytes a block, %s",
                 get_tensor_model_parallel_rank(), kv.num_layers, self._worker.block_bytes,
                 "shared memory" if self._worker.uses_shared_memory else "gRPC")

    def _plan(self) -> StepPlan:
        meta = self._get_connector_metadata()
        assert isinstance(meta, KvtierConnectorMetadata)
        return meta.plan

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        plan = self._plan()
        if plan.loads and self._worker is not None:
            self._load_errors |= self._worker.load(plan.loads)
        self._step_done = plan.step

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # start_load_kv loaded every layer

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor,
                      attn_metadata: "AttentionMetadata", **kwargs: Any) -> None:
        index = self._layer_index.get(layer_name)
        if index is not None and self._worker is not None:
            self._worker.save_layer(index, self._plan().saves)

    def wait_for_save(self):
        if self._worker is not None and self.has_connector_metadata():
            self._worker.finish_saves(self._plan().saves)

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors

    def build_connector_worker_meta(self) -> Optional[KVConnectorWorkerMetadata]:
        step, self._step_done = self._step_done, None
        return None if step is None else KvtierWorkerMetadata(step=step)

    def shutdown(self):
        if self._worker is not None:
            log.info("kvtier: worker stats %s", self._worker.stats)
            self._worker.close()
        if self._scheduler is not None:
            log.info("kvtier: scheduler stats %s", self._scheduler.stats)
            self._scheduler.close()
        self._client.close()

    # ---- scheduler side ----------------------------------------------

    def get_num_new_matched_tokens(self, request: "Request",
                                   num_computed_tokens: int) -> tuple[Optional[int], bool]:
        info = RequestInfo(
            request_id=request.request_id, prompt_token_ids=request.prompt_token_ids or [],
            num_tokens=request.num_tokens, kv_transfer_params=request.kv_transfer_params,
            cache_salt=request.cache_salt,
            # Token ids alone do not name the KV of images, adapters or embeddings.
            cacheable=(request.prompt_token_ids is not None and not request.mm_features
                       and request.lora_request is None
                       and getattr(request, "prompt_embeds", None) is None))
        tokens = self._scheduler.match(info, num_computed_tokens)
        if tokens:
            log.info("kvtier: request %s: %d tokens from kvtierd beyond vLLM's %d (%s)",
                     request.request_id, tokens, num_computed_tokens,
                     ", ".join(f"{n} in {tier or '?'}" for tier, n in
                               sorted(self._scheduler.load_tiers(request.request_id).items())))
        return tokens, False

    def get_external_cache_hit_sources(self, request: "Request",
                                       num_external_tokens: int) -> dict:
        if num_external_tokens == 0:
            return {}
        out: dict = {}
        for tier, tokens in self._scheduler.load_tiers(request.request_id).items():
            source = _TIER_SOURCES.get(tier, CacheHitSource.EXTERNAL_UNSPECIFIED)
            out[source] = out.get(source, 0) + tokens
        return out

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks",
                                 num_external_tokens: int):
        self._scheduler.allocated(request.request_id, num_external_tokens)

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> KVConnectorMetadata:
        scheduled: List[ScheduledRequest] = [
            ScheduledRequest(request_id=r.req_id, num_computed_tokens=r.num_computed_tokens,
                             new_block_ids=list(r.block_ids[0]) if r.block_ids else [],
                             replaces_block_ids=True)
            for r in scheduler_output.scheduled_new_reqs]
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            new_ids = cached.new_block_ids[i]
            scheduled.append(ScheduledRequest(
                request_id=req_id, num_computed_tokens=cached.num_computed_tokens[i],
                new_block_ids=list(new_ids[0]) if new_ids else None,
                replaces_block_ids=req_id in cached.resumed_req_ids))
        plan = self._scheduler.build(scheduled, scheduler_output.num_scheduled_tokens)
        return KvtierConnectorMetadata(plan=plan)

    def update_connector_output(self, connector_output: "KVConnectorOutput"):
        # After vLLM moved the requests with invalid blocks back (the union
        # of every rank's load errors): saves that waited for the step's
        # loads may go now, and those requests' blocks are saved again.
        meta = connector_output.kv_connector_worker_meta
        step = meta.step if isinstance(meta, KvtierWorkerMetadata) else None
        self._scheduler.step_done(step, set(connector_output.invalid_block_ids or ()))

    def request_finished(self, request: "Request",
                         block_ids: list[int]) -> tuple[bool, Optional[dict]]:
        self._scheduler.finished(request.request_id)
        return False, None  # saves are done by the end of each step
