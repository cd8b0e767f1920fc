"""kvtierd's Anthropic Messages API through the real, unmodified anthropic SDK.

A 3,000-token system prompt marked for the 1h cache is written on the first
call and read on the second, unary and streamed; usage parts add up; bad input
gets Anthropic's error types; one tenant never reads another's cache.
"""
import json
import unittest
from decimal import Decimal

import anthropic

from kvtierd_fixture import ALICE_KEY, BOB_KEY, CAROL_KEY, Kvtierd

MODEL = "tiny-8k"


def long_system(tag):
    # Distinct per test (tag), long enough for the minimum cacheable length.
    return " ".join(f"{tag} rule {i}: answer briefly and kindly." for i in range(95))


class AnthropicSdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Kvtierd()
        cls.client = anthropic.Anthropic(api_key=ALICE_KEY, base_url=cls.daemon.base_url,
                                         max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def create(self, system, ttl="1h", client=None, **kw):
        return (client or self.client).messages.create(
            model=MODEL, max_tokens=8, extra_body={"temperature": 0},
            system=[{"type": "text", "text": system,
                     "cache_control": {"type": "ephemeral", "ttl": ttl}}],
            messages=[{"role": "user", "content": "Hello there"}], **kw)

    def assert_parts_sum(self, usage, prompt_tokens):
        self.assertEqual(usage.input_tokens + usage.cache_creation_input_tokens +
                         usage.cache_read_input_tokens, prompt_tokens)
        self.assertEqual(usage.cache_creation.ephemeral_5m_input_tokens +
                         usage.cache_creation.ephemeral_1h_input_tokens,
                         usage.cache_creation_input_tokens)

    def test_a_marked_system_prompt_is_written_then_read(self):
        system = long_system("unary")
        count = self.client.messages.count_tokens(
            model=MODEL,
            system=[{"type": "text", "text": system,
                     "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            messages=[{"role": "user", "content": "Hello there"}])
        self.assertGreater(count.input_tokens, 2500)

        first = self.create(system)
        self.assertEqual(first.type, "message")
        self.assertEqual(first.role, "assistant")
        self.assertTrue(first.id.startswith("msg_"))
        self.assertEqual(first.content[0].type, "text")
        self.assertIn(first.stop_reason, ("end_turn", "max_tokens"))
        written = first.usage.cache_creation_input_tokens
        self.assertGreater(written, 2500)
        self.assertEqual(first.usage.cache_creation.ephemeral_1h_input_tokens, written)
        self.assertEqual(first.usage.cache_creation.ephemeral_5m_input_tokens, 0)
        self.assertEqual(first.usage.cache_read_input_tokens, 0)
        self.assert_parts_sum(first.usage, count.input_tokens)

        second = self.create(system)
        self.assertEqual(second.usage.cache_read_input_tokens, written)
        self.assertEqual(second.usage.cache_creation_input_tokens, 0)
        self.assert_parts_sum(second.usage, count.input_tokens)
        # Greedy: the same answer from the cache as from a full prefill.
        self.assertEqual(second.content[0].text, first.content[0].text)

    def test_streamed_usage_equals_unary_usage(self):
        system = long_system("stream")
        with self.client.messages.stream(
                model=MODEL, max_tokens=8, extra_body={"temperature": 0},
                system=[{"type": "text", "text": system,
                         "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
                messages=[{"role": "user", "content": "Hello there"}]) as stream:
            kinds = [event.type for event in stream]
            streamed = stream.get_final_message()
        self.assertEqual(kinds[0], "message_start")
        self.assertIn("content_block_delta", kinds)
        self.assertEqual(kinds[-1], "message_stop")
        written = streamed.usage.cache_creation_input_tokens
        self.assertGreater(written, 2500)
        self.assertEqual(streamed.usage.cache_creation.ephemeral_1h_input_tokens, written)

        unary = self.create(system)  # the same prompt again: now a read
        self.assertEqual(unary.usage.cache_read_input_tokens, written)
        self.assertEqual(unary.content[0].text, streamed.content[0].text)
        with self.client.messages.stream(
                model=MODEL, max_tokens=8, extra_body={"temperature": 0},
                system=[{"type": "text", "text": system,
                         "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
                messages=[{"role": "user", "content": "Hello there"}]) as stream:
            read = stream.get_final_message()
        self.assertEqual(read.usage.cache_read_input_tokens, written)
        self.assertEqual(read.usage.input_tokens, unary.usage.input_tokens)
        self.assertEqual(read.usage.output_tokens, unary.usage.output_tokens)
        self.assertEqual(read.content[0].text, unary.content[0].text)

    def test_another_tenant_never_reads_the_cache(self):
        system = long_system("tenants")
        alice = self.create(system)
        self.assertGreater(alice.usage.cache_creation_input_tokens, 0)
        bob = anthropic.Anthropic(api_key=BOB_KEY, base_url=self.daemon.base_url, max_retries=0)
        theirs = self.create(system, client=bob)
        self.assertEqual(theirs.usage.cache_read_input_tokens, 0)
        self.assertEqual(theirs.usage.cache_creation_input_tokens,
                         alice.usage.cache_creation_input_tokens)

    def test_the_billing_report_shows_the_requests_to_the_cent(self):
        carol = anthropic.Anthropic(api_key=CAROL_KEY, base_url=self.daemon.base_url,
                                    max_retries=0)
        system = long_system("billing")
        calls = [self.create(system, client=carol), self.create(system, client=carol)]
        report = json.loads(self.daemon.kvtier("--json", "billing", "report", "--tenant", "carol",
                                               key=CAROL_KEY))
        total = report["total"]
        self.assertEqual(total["requests"], 2)
        self.assertEqual(total["input_tokens"], sum(c.usage.input_tokens for c in calls))
        self.assertEqual(total["cache_creation_1h"],
                         sum(c.usage.cache_creation.ephemeral_1h_input_tokens for c in calls))
        self.assertEqual(total["cache_read_input_tokens"],
                         sum(c.usage.cache_read_input_tokens for c in calls))
        self.assertEqual(total["output_tokens"], sum(c.usage.output_tokens for c in calls))
        # kvtierd's default prices (DESIGN 6): $3 per million input tokens, a
        # 1h write 2x that, a read 0.1x, $15 per million output tokens.
        per_token = Decimal(3) / 10**6
        expected = sum(
            c.usage.input_tokens * per_token +
            c.usage.cache_creation.ephemeral_1h_input_tokens * 2 * per_token +
            c.usage.cache_read_input_tokens * per_token / 10 +
            c.usage.output_tokens * Decimal(15) / 10**6 for c in calls)
        self.assertEqual(round(Decimal(total["cost"]), 2), round(expected, 2))
        self.assertLess(abs(Decimal(total["cost"]) - expected), Decimal("0.000002"))

    def test_errors_have_anthropic_types_and_statuses(self):
        bad_key = anthropic.Anthropic(api_key="wrong-key-0123456789", base_url=self.daemon.base_url,
                                      max_retries=0)
        with self.assertRaises(anthropic.AuthenticationError):
            self.create("hi", client=bad_key)
        with self.assertRaises(anthropic.NotFoundError):
            self.client.messages.create(model="claude-opus-4", max_tokens=8,
                                        messages=[{"role": "user", "content": "hi"}])
        bad = [
            dict(messages=[]),
            dict(messages=[{"role": "tool", "content": "hi"}]),
            dict(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]),
            dict(messages=[{"role": "user", "content": "hi"}], max_tokens=9000),
            dict(system=[{"type": "text", "text": long_system("order"),
                          "cache_control": {"type": "ephemeral", "ttl": "5m"}},
                         {"type": "text", "text": "more",
                          "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
                 messages=[{"role": "user", "content": "hi"}]),
            dict(system=[{"type": "text", "text": f"part {i}",
                          "cache_control": {"type": "ephemeral"}} for i in range(5)],
                 messages=[{"role": "user", "content": "hi"}]),
            dict(messages=[{"role": "user", "content": "hi"}],
                 system=[{"type": "text", "text": "x",
                          "cache_control": {"type": "ephemeral", "ttl": "2h"}}]),
        ]
        for kw in bad:
            args = dict(model=MODEL, max_tokens=8)
            args.update(kw)
            with self.subTest(kw=kw), self.assertRaises(anthropic.BadRequestError) as e:
                self.client.messages.create(**args)
            self.assertEqual(e.exception.status_code, 400)
            self.assertEqual(e.exception.body["type"], "error")
            self.assertEqual(e.exception.body["error"]["type"], "invalid_request_error")


if __name__ == "__main__":
    unittest.main()
