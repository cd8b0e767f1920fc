"""Drives one vLLM engine (CPU build) for tools/integration/vllm.sh.

    vllm_driver.py run --role ROLE --model DIR --out FILE [--addr HOST:PORT]
    vllm_driver.py compare PRODUCER CONSUMER CONSUMER2 BASELINE

`run` starts one engine in this process, feeds it token ids (no tokenizer),
greedy, and writes what it saw as JSON to FILE:
  producer  with KvtierConnector: computes the prompt cold and publishes it
  consumer  with KvtierConnector, a new process with an empty prefix cache:
            should load the shared prefix from kvtierd
  consumer2 the same once more: the second reuse, after kvtierd saw the first
  baseline  without a connector: the reference tokens, vLLM's cold TTFT and
            vLLM's own (in-memory) prefix-hit TTFT for the same prompt
Every engine first serves a warm-up prompt that shares nothing with the
measured one, so the measured TTFT holds no one-time start-up cost.

`compare` checks the three and prints one JSON object (the last line); it
exits 1 when a check fails.
"""
import argparse
import json
import sys
import time

SHARED_PREFIX_TOKENS = 2048   # the long shared prefix (16 kvtier blocks of 128)
SUFFIX_TOKENS = 37            # a tail that fills no block
OUTPUT_TOKENS = 32
VOCAB = 32000                 # bench50m's
BLOCK_TOKENS = 128            # vLLM's block size and kvtier's, here
# The tokens alone prove little: bench50m's random weights make the greedy
# output follow the last prompt token, whatever the prefix. The runner-up
# logprobs do move with the prefix (by about 1 for another prefix), so in f32
# (the default) they are compared too. In bf16 they are not: the logits'
# rounding (about 1 at these magnitudes) reorders the runner-ups between two
# runs of the same engine, so only the tokens are compared.
TOP_LOGPROBS = 8
DTYPES = ("float32", "bfloat16")
LOGPROB_TOLERANCE = {"float32": 0.01}


def token_ids(seed, n):
    """Deterministic ids in [3, VOCAB) (0..2 are the specials)."""
    x, out = seed * 2654435761 + 12345, []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(3 + (x >> 33) % (VOCAB - 3))
    return out


PROMPT = token_ids(1, SHARED_PREFIX_TOKENS + SUFFIX_TOKENS)
WARMUP = token_ids(2, 300)


def make_engine(model, addr, dtype, block_tokens):
    from vllm import LLM

    kwargs = {}
    if addr:
        from vllm.config import KVTransferConfig
        extra = {"addr": addr}
        if block_tokens:
            extra["block_tokens"] = block_tokens
        kwargs["kv_transfer_config"] = KVTransferConfig(
            kv_connector="KvtierConnector", kv_connector_module_path="kvtier_vllm",
            kv_role="kv_both", kv_connector_extra_config=extra,
            kv_load_failure_policy="recompute")
    return LLM(model=model, skip_tokenizer_init=True, enforce_eager=True, dtype=dtype,
               block_size=BLOCK_TOKENS, max_model_len=4096, max_num_batched_tokens=4096,
               enable_prefix_caching=True, disable_log_stats=False, seed=0, **kwargs)


def generate(llm, prompt, max_tokens):
    """(output token ids, TTFT seconds, prefix-cached tokens, top logprobs) of
    one request; the logprobs are [[token, logprob], ...] per output token."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True,
                            detokenize=False, logprobs=TOP_LOGPROBS)
    start = time.monotonic()
    [out] = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
    wall = time.monotonic() - start
    metrics = out.metrics
    ttft = getattr(metrics, "first_token_latency", 0.0) if metrics is not None else 0.0
    top = [sorted([t, lp.logprob] for t, lp in step.items()) for step in out.outputs[0].logprobs]
    return list(out.outputs[0].token_ids), ttft or wall, out.num_cached_tokens or 0, top


def counter(llm, name, **labels):
    """The sum of a Prometheus counter of vLLM's over the series whose labels
    include `labels` (0 when absent)."""
    total = 0
    for m in llm.get_metrics():
        if m.name == name and hasattr(m, "value") and \
                all(m.labels.get(k) == v for k, v in labels.items()):
            total += m.value
    return total


def hits_by_source(llm):
    """{source: tokens} of vllm:prompt_tokens_cached_by_source: the connector
    reports kvtierd's dram as "host" and its flash and RocksDB tiers as "disk"."""
    return {source: counter(llm, "vllm:prompt_tokens_cached_by_source", source=source)
            for source in ("device", "host", "disk", "external_unspecified")}


def run(args):
    llm = make_engine(args.model, args.addr, args.dtype, args.block_tokens)
    generate(llm, WARMUP, 2)
    hits_before = counter(llm, "vllm:external_prefix_cache_hits")
    sources_before = hits_by_source(llm)
    tokens, ttft, cached, top = generate(llm, PROMPT, OUTPUT_TOKENS)
    sources = {k: v - sources_before[k] for k, v in hits_by_source(llm).items()}
    result = {
        "role": args.role, "dtype": args.dtype, "prompt_tokens": len(PROMPT), "tokens": tokens,
        "ttft_s": ttft,
        "cached_tokens": cached, "top_logprobs": top,
        "external_hit_tokens": counter(llm, "vllm:external_prefix_cache_hits") - hits_before,
        "hit_tokens_by_source": {k: v for k, v in sources.items() if v},
    }
    if args.role == "baseline":
        # vLLM's own prefix cache now holds the prompt: the in-memory hit.
        _, local_ttft, local_cached, local_top = generate(llm, PROMPT, OUTPUT_TOKENS)
        result.update(local_hit_ttft_s=local_ttft, local_hit_cached_tokens=local_cached,
                      local_hit_top_logprobs=local_top)
    with open(args.out, "w") as f:
        json.dump(result, f)


def logprob_gap(a, b):
    """The largest |logprob difference| of two runs' top logprobs; None when
    a step's top tokens differ."""
    gap = 0.0
    for step_a, step_b in zip(a, b, strict=True):
        if [t for t, _ in step_a] != [t for t, _ in step_b]:
            return None
        gap = max(gap, max(abs(x - y) for (_, x), (_, y) in zip(step_a, step_b)))
    return gap


def compare(args):
    runs = {}
    for role in ("producer", "consumer", "consumer2", "baseline"):
        with open(getattr(args, role)) as f:
            runs[role] = json.load(f)
    producer, baseline = runs["producer"], runs["baseline"]
    tolerance = LOGPROB_TOLERANCE.get(baseline["dtype"])
    checks = {
        "producer_had_no_hit": producer["external_hit_tokens"] == 0,
        "producer_tokens_equal_baseline": producer["tokens"] == baseline["tokens"],
    }
    summary = {"ok": False, "checks": checks, "dtype": baseline["dtype"],
               "prompt_tokens": baseline["prompt_tokens"],
               "shared_prefix_tokens": SHARED_PREFIX_TOKENS,
               "logprob_tolerance": tolerance,
               "logprob_gap_producer_vs_cold": logprob_gap(producer["top_logprobs"],
                                                           baseline["top_logprobs"]),
               "ttft_cold_s": round(baseline["ttft_s"], 4),
               "ttft_cold_with_connector_s": round(producer["ttft_s"], 4),
               "ttft_vllm_local_hit_s": round(baseline["local_hit_ttft_s"], 4)}
    # consumer: the first reuse, from wherever kvtierd placed the blocks;
    # consumer2: the next one, after the first hit let kvtierd promote them.
    for role in ("consumer", "consumer2"):
        run = runs[role]
        # A consumer computes the prompt's tail over loaded KV as vLLM does
        # over its own cached KV: their logprobs agree.
        gap = logprob_gap(run["top_logprobs"], baseline["local_hit_top_logprobs"])
        checks[f"{role}_loaded_shared_prefix"] = \
            run["external_hit_tokens"] >= SHARED_PREFIX_TOKENS
        checks[f"{role}_tokens_equal_baseline"] = run["tokens"] == baseline["tokens"]
        if tolerance is not None:
            checks[f"{role}_logprobs_match_local_hit"] = gap is not None and gap <= tolerance
        checks[f"{role}_ttft_below_cold"] = run["ttft_s"] < baseline["ttft_s"]
        summary.update({
            f"{role}_external_hit_tokens": run["external_hit_tokens"],
            f"{role}_hit_tokens_by_source": run["hit_tokens_by_source"],
            f"{role}_logprob_gap_vs_local_hit": gap,
            f"ttft_{role}_kvtier_hit_s": round(run["ttft_s"], 4),
            f"{role}_over_local_hit": round(run["ttft_s"] / baseline["local_hit_ttft_s"], 3),
            f"{role}_over_cold": round(run["ttft_s"] / baseline["ttft_s"], 3),
        })
    summary["ok"] = all(checks.values())
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--role", choices=["producer", "consumer", "consumer2", "baseline"],
                   required=True)
    r.add_argument("--model", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--addr", default="")
    r.add_argument("--dtype", choices=DTYPES, default="float32")
    r.add_argument("--block-tokens", type=int, default=0,
                   help="kvtier's block size (default: vLLM's, %d)" % BLOCK_TOKENS)
    c = sub.add_parser("compare")
    c.add_argument("producer")
    c.add_argument("consumer")
    c.add_argument("consumer2")
    c.add_argument("baseline")
    args = p.parse_args()
    if args.cmd == "run":
        if (args.role == "baseline") == bool(args.addr):
            p.error("--addr goes with the producer and the consumer, not the baseline")
        run(args)
        return 0
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
