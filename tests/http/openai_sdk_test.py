"""kvtierd's OpenAI Chat Completions and Completions APIs through the real,
unmodified openai SDK.

A repeated long system prompt is read from the automatic prefix cache on the
second call (usage.prompt_tokens_details.cached_tokens), unary and streamed;
greedy streamed text equals unary text; prompt_cache_key (or vLLM's
cache_salt) partitions a tenant's cache; another tenant never hits; bad input
gets OpenAI's error types and statuses.
"""
import json
import unittest
import urllib.error
import urllib.request

import openai

from kvtierd_fixture import ALICE_KEY, BOB_KEY, Kvtierd

CONTEXT = 8192  # --model-preset tiny-8k
MODEL = None  # the served model's id, from GET /v1/models


def long_system(tag):
    # Distinct per test (tag), so no test reads another's blocks; ~3,000
    # tokens of the byte-level tokenizer.
    return " ".join(f"{tag} rule {i}: answer briefly and kindly." for i in range(80))


def chat(system, user="Hello there"):
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


class OpenAiSdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Kvtierd()
        cls.client = cls.client_for(ALICE_KEY)
        global MODEL
        MODEL = cls.client.models.list().data[0].id

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    @classmethod
    def client_for(cls, key):
        return openai.OpenAI(api_key=key, base_url=cls.daemon.base_url + "/v1", max_retries=0)

    def create(self, system, client=None, **kw):
        return (client or self.client).chat.completions.create(
            model=MODEL, max_tokens=8, temperature=0, messages=chat(system), **kw)

    def stream(self, system, **kw):
        """The chunks of a streamed chat with include_usage."""
        return list(self.client.chat.completions.create(
            model=MODEL, max_tokens=8, temperature=0, messages=chat(system), stream=True,
            stream_options={"include_usage": True}, **kw))

    def assert_usage_sums(self, usage):
        self.assertEqual(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)
        self.assertLessEqual(usage.prompt_tokens_details.cached_tokens, usage.prompt_tokens)

    def test_a_repeated_system_prompt_is_read_from_the_cache(self):
        system = long_system("unary")
        first = self.create(system)
        self.assertEqual(first.object, "chat.completion")
        self.assertTrue(first.id.startswith("chatcmpl-"))
        self.assertEqual(first.model, MODEL)
        self.assertEqual(len(first.choices), 1)
        self.assertEqual(first.choices[0].index, 0)
        self.assertEqual(first.choices[0].message.role, "assistant")
        self.assertIsInstance(first.choices[0].message.content, str)
        self.assertIn(first.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(first.usage.prompt_tokens, 2500)
        self.assertEqual(first.usage.prompt_tokens_details.cached_tokens, 0)
        self.assert_usage_sums(first.usage)

        second = self.create(system)
        self.assertEqual(second.usage.prompt_tokens, first.usage.prompt_tokens)
        self.assertGreater(second.usage.prompt_tokens_details.cached_tokens, 2000)
        self.assert_usage_sums(second.usage)
        # Greedy: the same answer from the cache as from a full prefill.
        self.assertEqual(second.choices[0].message.content, first.choices[0].message.content)

    def test_streamed_chunks_usage_and_text_equal_unary(self):
        system = long_system("stream")
        chunks = self.stream(system)
        self.assertTrue(all(c.object == "chat.completion.chunk" for c in chunks))
        self.assertEqual(len({c.id for c in chunks}), 1)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        self.assertEqual(chunks[0].choices[0].delta.content, "")
        usage_chunk = chunks[-1]
        self.assertEqual(usage_chunk.choices, [])
        self.assertIsNotNone(usage_chunk.usage)
        last = chunks[-2]
        self.assertIn(last.choices[0].finish_reason, ("stop", "length"))
        self.assertTrue(all(c.usage is None for c in chunks[:-1]))
        streamed_text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
        self.assertEqual(usage_chunk.usage.prompt_tokens_details.cached_tokens, 0)
        self.assert_usage_sums(usage_chunk.usage)

        unary = self.create(system)  # the same prompt again: now a read
        self.assertEqual(unary.choices[0].message.content, streamed_text)
        self.assertEqual(unary.usage.prompt_tokens, usage_chunk.usage.prompt_tokens)
        self.assertEqual(unary.usage.completion_tokens, usage_chunk.usage.completion_tokens)
        self.assertGreater(unary.usage.prompt_tokens_details.cached_tokens, 2000)

        again = self.stream(system)
        self.assertEqual(again[-1].usage.prompt_tokens_details.cached_tokens,
                         unary.usage.prompt_tokens_details.cached_tokens)
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in again[:-1]),
                         streamed_text)

    def test_a_stream_without_include_usage_has_no_usage_chunk(self):
        chunks = list(self.client.chat.completions.create(
            model=MODEL, max_tokens=4, temperature=0, messages=chat("short"), stream=True))
        self.assertTrue(all(c.usage is None for c in chunks))
        self.assertIn(chunks[-1].choices[0].finish_reason, ("stop", "length"))

    def test_prompt_cache_key_partitions_the_tenants_cache(self):
        system = long_system("keys")
        a = self.create(system, prompt_cache_key="A")
        self.assertEqual(a.usage.prompt_tokens_details.cached_tokens, 0)
        b = self.create(system, prompt_cache_key="B")
        self.assertEqual(b.usage.prompt_tokens_details.cached_tokens, 0)
        none = self.create(system)
        self.assertEqual(none.usage.prompt_tokens_details.cached_tokens, 0)
        again = self.create(system, prompt_cache_key="A")
        self.assertGreater(again.usage.prompt_tokens_details.cached_tokens, 2000)
        # vLLM's cache_salt is the same key.
        salt = self.create(system, extra_body={"cache_salt": "A"})
        self.assertGreater(salt.usage.prompt_tokens_details.cached_tokens, 2000)
        # Another tenant's key A is another partition.
        bob = self.create(system, client=self.client_for(BOB_KEY), prompt_cache_key="A")
        self.assertEqual(bob.usage.prompt_tokens_details.cached_tokens, 0)

    def test_another_tenant_never_hits(self):
        system = long_system("tenants")
        self.create(system)
        mine = self.create(system)
        self.assertGreater(mine.usage.prompt_tokens_details.cached_tokens, 2000)
        theirs = self.create(system, client=self.client_for(BOB_KEY))
        self.assertEqual(theirs.usage.prompt_tokens_details.cached_tokens, 0)
        self.assertEqual(theirs.usage.prompt_tokens, mine.usage.prompt_tokens)

    def test_max_tokens_ends_with_length(self):
        for field in ("max_tokens", "max_completion_tokens"):
            with self.subTest(field=field):
                r = self.client.chat.completions.create(
                    model=MODEL, temperature=0, messages=chat("count"),
                    extra_body={field: 1, "seed": 7, "user": "u-1"})
                self.assertEqual(r.usage.completion_tokens, 1)
                self.assertEqual(r.choices[0].finish_reason, "length")

    def test_completions_endpoint(self):
        prompt = long_system("completion")
        first = self.client.completions.create(model=MODEL, prompt=prompt, temperature=0)
        self.assertEqual(first.object, "text_completion")
        self.assertTrue(first.id.startswith("cmpl-"))
        self.assertIsInstance(first.choices[0].text, str)
        self.assertLessEqual(first.usage.completion_tokens, 16)  # OpenAI's default max_tokens
        self.assertIn(first.choices[0].finish_reason, ("stop", "length"))
        chunks = list(self.client.completions.create(
            model=MODEL, prompt=prompt, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        self.assertTrue(all(c.object == "text_completion" for c in chunks))
        self.assertEqual("".join(c.choices[0].text for c in chunks[:-1]), first.choices[0].text)
        usage = chunks[-1].usage
        self.assertEqual(usage.prompt_tokens, first.usage.prompt_tokens)
        self.assertGreater(usage.prompt_tokens_details.cached_tokens, 0)

    def assert_error(self, error, status, type_, code=None, **kw):
        with self.assertRaises(error) as e:
            self.client.chat.completions.create(**kw)
        self.assertEqual(e.exception.status_code, status)
        self.assertEqual(e.exception.type, type_)
        if code is not None:
            self.assertEqual(e.exception.code, code)
        return e.exception

    def test_errors_have_openai_types_and_statuses(self):
        hi = [{"role": "user", "content": "hi"}]
        with self.assertRaises(openai.AuthenticationError) as e:
            self.create("hi", client=self.client_for("wrong-key-0123456789"))
        self.assertEqual(e.exception.status_code, 401)
        self.assertEqual(e.exception.type, "invalid_request_error")
        self.assertEqual(e.exception.code, "invalid_api_key")
        # No key at all (the SDK always sends one).
        request = urllib.request.Request(
            self.daemon.base_url + "/v1/chat/completions", method="POST",
            data=json.dumps({"model": MODEL, "messages": hi}).encode(),
            headers={"content-type": "application/json"})
        with self.assertRaises(urllib.error.HTTPError) as raw:
            urllib.request.urlopen(request, timeout=30)
        self.assertEqual(raw.exception.code, 401)
        self.assertEqual(json.load(raw.exception)["error"]["code"], "invalid_api_key")
        self.assert_error(openai.NotFoundError, 404, "not_found_error", "model_not_found",
                          model="gpt-4o", messages=hi)
        bad = {
            "n": dict(messages=hi, n=2),
            "messages": dict(messages=[]),
            "messages[0].role": dict(messages=[{"role": "tool", "content": "hi"}]),
            "messages[0].content[0].type": dict(messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
            "max_tokens": dict(messages=hi, max_tokens=CONTEXT + 1),
            "messages ": dict(messages=[{"role": "user", "content": "many words " * CONTEXT}]),
            "temperature": dict(messages=hi, extra_body={"temperature": "hot"}),
            "stop": dict(messages=hi, stop=["a", "b", "c", "d", "e"]),
            "tools": dict(messages=hi, tools=[{"type": "function", "function": {"name": "f"}}]),
            "stream_options": dict(messages=hi, stream_options={"include_usage": True}),
        }
        for param, kw in bad.items():
            with self.subTest(param=param):
                args = dict(model=MODEL, max_tokens=8)
                args.update(kw)
                err = self.assert_error(openai.BadRequestError, 400, "invalid_request_error",
                                        **args)
                self.assertEqual(err.param, param.strip())
                self.assertIn(param.strip(), err.message)
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.completions.create(model=MODEL, prompt=[1, 2, 3])
        self.assertEqual(e.exception.param, "prompt")
        self.assertIn("not supported", e.exception.message)
        with self.assertRaises(openai.APIStatusError) as e:
            self.create("x" * (5 << 20))
        self.assertEqual(e.exception.status_code, 413)


if __name__ == "__main__":
    unittest.main()
