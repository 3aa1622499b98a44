"""Model loading: deterministic offline tiny specs through the real from_pretrained path; clear errors otherwise."""

from __future__ import annotations

import hashlib

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

from iapo.models import ModelNotFoundError
from iapo.models.loader import load_model
from iapo.models.tiny import QWEN_SPECIAL_TOKENS, build_tiny


def file_digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def first_token_logits(path):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    processor = Qwen2_5_VLProcessor.from_pretrained(path)
    ids = processor.tokenizer(
        "<|im_start|>user\nWhat pattern is inside the red circle?<|im_end|>\n", return_tensors="pt"
    )
    with torch.no_grad():
        return model(**ids).logits[0, -1]


def test_tiny_spec_builds_are_deterministic(tmp_path):
    first = build_tiny("tiny-student", root=tmp_path / "a")
    second = build_tiny("tiny-student", root=tmp_path / "b")
    assert first.name == second.name
    assert file_digests(first) == file_digests(second)
    torch.testing.assert_close(first_token_logits(first), first_token_logits(second), atol=0, rtol=0)
    assert build_tiny("tiny-student", root=tmp_path / "a") == first  # cached, not rebuilt


def test_tiny_student_is_a_real_qwen2_5_vl(tiny_student):
    model, processor = tiny_student
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert isinstance(processor, Qwen2_5_VLProcessor)
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    assert len(set(ids)) == len(QWEN_SPECIAL_TOKENS)
    assert tokenizer.convert_ids_to_tokens(ids) == list(QWEN_SPECIAL_TOKENS)
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    text = 'Zoom: <tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [1, 2, 3, 4]}}</tool_call> ünïcode 😀'
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert not any(p.requires_grad for p in model.parameters())


def test_teacher_is_larger_and_sees_more_pixels():
    student, student_processor = load_model("tiny-student", device="cpu")
    teacher, teacher_processor = load_model("tiny-teacher", device="cpu")
    assert teacher.num_parameters() > 2 * student.num_parameters()
    assert (
        teacher_processor.image_processor.size["longest_edge"] > student_processor.image_processor.size["longest_edge"]
    )
    assert teacher_processor.tokenizer.get_vocab() == student_processor.tokenizer.get_vocab()


def test_missing_models_fail_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match=r"huggingface-cli download Qwen/Qwen2\.5-VL-3B-Instruct"):
        load_model("Qwen/Qwen2.5-VL-3B-Instruct", device="cpu")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(ValueError, match="quantization"):
        load_model("tiny-student", quantization="int3", device="cpu")
