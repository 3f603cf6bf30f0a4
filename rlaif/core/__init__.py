"""Pure algorithm code: constitution, prompts, soft labels, losses, advantages, records.

Imports neither ray, vllm nor deepspeed (docs/design.md §3); tests run in milliseconds.
"""
