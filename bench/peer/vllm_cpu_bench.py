"""The peer side of bench/peer/vllm_cpu.sh: vLLM's CPU engine on the same
model directory as kvtier's engine_bench, fed token ids, measured the way
engine_bench measures ours. Prints one JSON object (the last line).

    vllm_cpu_bench.py --model DIR --dtype float32|bfloat16 [--prompt-tokens 2048]
    vllm_cpu_bench.py --compare WORKDIR --rounds N   (vllm_cpu.sh's ratios)

  ttft_cold_ms            a fresh prompt of --prompt-tokens ids, one output
                          token (prefix caching on, nothing cached), median of 3
  ttft_hit_ms             the last of those prompts again: vLLM's own prefix
                          cache holds all its full blocks (ttft_hit_cached_tokens)
  decode_tokens_per_s_bN  N sequences of 32-token prompts decoding together:
                          N * (long - short) extra output tokens over the extra
                          time of a run with `long` output tokens against one
                          with `short`, so prefill and start-up cancel out
  decode_tokens_per_s_b1_long_prompt
                          one sequence decoding after the --prompt-tokens prompt
                          (its prefix cached): 32 extra output tokens over the
                          extra time, as above; each step attends over the
                          whole prompt
"""
import argparse
import json
import statistics
import time

VOCAB = 32000  # bench50m's


def token_ids(seed, n):
    """Deterministic ids in [3, VOCAB) (0..2 are the specials)."""
    x, out = seed * 2654435761 + 12345, []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(3 + (x >> 33) % (VOCAB - 3))
    return out


# kvtier's engine_bench key and vLLM's for each measure, and whether lower is
# better (a time) or higher (a rate).
MEASURES = {"ttft_cold": ("ttft_cold_ms", True), "ttft_hit": ("ttft_hit_ms", True),
            "decode_b1": ("decode_tokens_per_s_b1", False),
            "decode_b64": ("decode_tokens_per_s_b64", False),
            "decode_b1_long": ("decode_tokens_per_s_b1_long_prompt", False)}


def compare(work, rounds):
    """Per round, kvtier / vLLM for each measure, dtype against dtype; prints
    the medians as one JSON object."""
    def load(name):
        with open(f"{work}/{name}") as f:
            return json.loads(f.read().strip().splitlines()[-1])

    pairs = {"fp32": ("f32", "float32"), "bf16": ("bf16", "bfloat16"),
             "f32_weights_vs_bf16": ("f32", "bfloat16")}
    ratios = {tag: {m: [] for m in MEASURES} for tag in pairs}
    raw = {name: [] for name in ("kvtier_f32", "kvtier_bf16", "vllm_float32", "vllm_bfloat16")}
    for r in range(1, rounds + 1):
        ours = {w: load(f"ours.{w}.{r}.json") for w in ("f32", "bf16")}
        peer = {d: load(f"vllm.{d}.{r}.json") for d in ("float32", "bfloat16")}
        for w, o in ours.items():
            raw[f"kvtier_{w}"].append({k: o[k] for k, _ in MEASURES.values()})
        for d, p in peer.items():
            raw[f"vllm_{d}"].append({k: p[k] for k, _ in MEASURES.values()})
        for tag, (w, d) in pairs.items():
            for m, (key, _) in MEASURES.items():
                ratios[tag][m].append(ours[w][key] / peer[d][key])
    out = {"bench": "vllm_cpu_peer", "rounds": rounds,
           "kvtier_kernels": ours["f32"].get("kernels"), "threads": ours["f32"].get("threads"),
           "raw": raw}
    for tag, by in ratios.items():
        med = {m: statistics.median(v) for m, v in by.items()}
        out[f"vs_vllm_{tag}"] = med
        out[f"even_or_better_vs_vllm_{tag}"] = all(
            (v <= 1.0) if MEASURES[m][1] else (v >= 1.0) for m, v in med.items())
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--compare", help="vllm_cpu.sh's work directory: print the ratios")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--model")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--prompt-tokens", type=int, default=2048)
    p.add_argument("--seq-len", type=int, default=4096, help="the model's context (max_model_len)")
    args = p.parse_args()
    if args.compare:
        compare(args.compare, args.rounds)
        return
    if not args.model:
        p.error("--model is required")

    from vllm import LLM, SamplingParams

    llm = LLM(model=args.model, skip_tokenizer_init=True, enforce_eager=True, dtype=args.dtype,
              block_size=128, max_model_len=args.seq_len, max_num_batched_tokens=4096,
              max_num_seqs=64, enable_prefix_caching=True, seed=0)

    def run(prompts, max_tokens):
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True,
                                detokenize=False)
        start = time.monotonic()
        outs = llm.generate([{"prompt_token_ids": q} for q in prompts], params, use_tqdm=False)
        return outs, time.monotonic() - start

    def ttft(prompt):
        [out], wall = run([prompt], 1)
        m = out.metrics
        first = getattr(m, "first_token_latency", 0.0) if m is not None else 0.0
        return (first or wall) * 1e3, out.num_cached_tokens or 0

    run([token_ids(2, 300)], 2)  # warm-up: nothing of it is reused
    cold = []
    for seed in (100, 101, 102):
        prompt = token_ids(seed, args.prompt_tokens)
        cold.append(ttft(prompt)[0])
    hit_ms, hit_cached = ttft(prompt)

    result = {"bench": "vllm_cpu", "dtype": args.dtype, "prompt_tokens": args.prompt_tokens,
              "ttft_cold_ms": statistics.median(cold), "ttft_hit_ms": hit_ms,
              "ttft_hit_cached_tokens": hit_cached}
    _, t_short = run([prompt], 9)
    _, t_long = run([prompt], 41)
    result["decode_tokens_per_s_b1_long_prompt"] = 32 / (t_long - t_short)
    for batch, short, long in ((1, 8, 72), (64, 8, 40)):
        prompts = [token_ids(1000 + batch * 100 + i, 32) for i in range(batch)]
        run(prompts, 2)  # warm-up at this batch
        _, t_short = run(prompts, short)
        _, t_long = run(prompts, long)
        result[f"decode_tokens_per_s_b{batch}"] = batch * (long - short) / (t_long - t_short)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
