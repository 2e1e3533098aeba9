"""The plain CLIP batch functions of `udfs/clip.py`, without Spark, on the tiny model."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lakecurate.curation.models import ensure_weights, model_id
from lakecurate.runtime.config import ModelConfig
from lakecurate.runtime.errors import ConfigError
from lakecurate.udfs import clip as C

TINY = C.ClipSpec("lakecurate-tiny", "none", "fp32", "cpu", batch_size=8)


@pytest.fixture(scope="module")
def tiny():
    return C.load_model(TINY)


@pytest.fixture(scope="module")
def records(sample_set):
    good = [r for r in sample_set.records if r.caption and not _broken(r.image)]
    return good[:40]


def _broken(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return min(im.size) < 16
    except OSError:
        return True


def _jpeg(size: tuple[int, int], color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_embeddings_are_unit_norm_float32_and_score_is_their_cosine(tiny, records):
    images = [C.decode_image(r.image, tiny.image_size) for r in records]
    img = C.embed_images(images, tiny.model, tiny.preprocess)
    txt = C.embed_texts([r.caption for r in records], tiny.model, tiny.tokenizer)
    assert img.dtype == np.float32 and img.shape == (len(records), 64)
    assert txt.shape == img.shape
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    cos = (img.astype(np.float64) * txt).sum(axis=1)
    np.testing.assert_allclose(C.clip_scores(img, txt), cos, atol=1e-6)
    assert len(np.unique(img.round(4), axis=0)) > len(records) // 2  # not one constant vector


def test_random_weights_are_the_same_in_every_worker(records):
    """Seeded init: a second load (another Python worker) gives identical vectors."""
    first = C.load_model(TINY)
    images = [C.decode_image(r.image, first.image_size) for r in records[:5]]
    a = C.embed_images(images, first.model, first.preprocess)
    C._MODELS.clear()
    second = C.load_model(TINY)
    assert second is not first
    np.testing.assert_array_equal(a, C.embed_images(images, second.model, second.preprocess))


def test_jpeg_draft_decodes_large_images_at_reduced_scale_but_not_below_the_model_size():
    big = C.decode_image(_jpeg((1024, 768)), min_side=64)
    assert big.mode == "RGB" and 64 <= min(big.size) < 768
    assert big.size[0] * 768 == big.size[1] * 1024  # DCT scaling keeps the aspect
    small = C.decode_image(_jpeg((100, 80)), min_side=224)
    assert small.size == (100, 80)
    png = io.BytesIO()
    Image.new("L", (300, 300), 128).save(png, "PNG")
    assert C.decode_image(png.getvalue(), 64).size == (300, 300)


def test_pipeline_rechunks_keeps_row_order_and_turns_bad_images_into_reasons(tiny, records):
    images = [r.image for r in records[:23]]
    captions = [r.caption for r in records[:23]]
    images[3] = b"\xff\xd8\xff\xe0 not a jpeg at all"
    images[10] = records[10].image[: len(records[10].image) // 3]  # truncated JPEG
    images[17] = None
    # input batches (5, 11, 7) do not line up with the model batch size (8)
    cuts = [(0, 5), (5, 16), (16, 23)]
    batches = [(pd.Series(images[a:b]), pd.Series(captions[a:b])) for a, b in cuts]
    out = pd.concat(list(C.embed_batches(batches, TINY)), ignore_index=True)
    assert len(out) == 23
    assert out.reject_reason[3] == C.REASON_DECODE and out.reject_reason[10] == C.REASON_DECODE
    assert out.reject_reason[17] == C.REASON_MISSING
    assert "Error" in out.reject_detail[3]
    ok = [i for i in range(23) if i not in (3, 10, 17)]
    assert out.reject_reason[ok].isna().all() and out.image_emb[3] is None
    pil = [C.decode_image(images[i], tiny.image_size) for i in ok]
    want_img = C.embed_images(pil, tiny.model, tiny.preprocess)
    want_txt = C.embed_texts([captions[i] for i in ok], tiny.model, tiny.tokenizer)
    np.testing.assert_allclose(np.stack(out.image_emb[ok]), want_img, atol=1e-5)
    np.testing.assert_allclose(np.stack(out.text_emb[ok]), want_txt, atol=1e-5)
    np.testing.assert_allclose(out.clip_score[ok], (want_img * want_txt).sum(1), atol=1e-5)


def test_bf16_cast_stays_close_to_fp32(tiny, records):
    bf16 = C.load_model(C.ClipSpec("lakecurate-tiny", "none", "bf16", "cpu"))
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    images = [C.decode_image(r.image, tiny.image_size) for r in records[:8]]
    a = C.embed_images(images, bf16.model, bf16.preprocess)
    C._MODELS.clear()
    fp32 = C.load_model(TINY)
    b = C.embed_images(images, fp32.model, fp32.preprocess)
    assert a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(1).min() > 0.95


def test_task_device_is_cpu_outside_spark_without_cuda():
    assert C.task_gpus() == []
    if not torch.cuda.is_available():
        assert C.task_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA device"):
            C.task_device("cuda")
    assert C.task_device("cpu") == "cpu"


@pytest.mark.gpu
def test_fp16_on_gpu_matches_fp32_on_cpu(records):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    gpu = C.load_model(C.ClipSpec("lakecurate-tiny", "none", "fp16", "cuda"))
    assert gpu.device.startswith("cuda")
    images = [C.decode_image(r.image, gpu.image_size) for r in records[:8]]
    a = C.embed_images(images, gpu.model, gpu.preprocess)
    C._MODELS.clear()
    cpu = C.load_model(TINY)
    assert (a * C.embed_images(images, cpu.model, cpu.preprocess)).sum(1).min() > 0.99


# --- weights on the driver -------------------------------------------------------------


def test_unreachable_unknown_or_missing_weights_fail_with_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # this machine has no hub; fail fast
    with pytest.raises(ConfigError, match="--pretrained /path/to") as e:
        ensure_weights(ModelConfig(name="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    assert e.value.key == "model.pretrained"
    with pytest.raises(ConfigError, match="neither a pretrained tag of ViT-B-32 .tags: .*laion2b"):
        ensure_weights(ModelConfig(name="ViT-B-32", pretrained="no-such-tag"))
    with pytest.raises(ConfigError, match="checkpoint file not found"):
        ensure_weights(ModelConfig(name="ViT-B-32", pretrained=str(tmp_path / "w.safetensors")))
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ConfigError, match="expected a .safetensors"):
        ensure_weights(ModelConfig(name="ViT-B-32", pretrained=str(tmp_path / "w.txt")))
    with pytest.raises(ConfigError, match="no model 'ViT-Nope'") as e:
        ensure_weights(ModelConfig(name="ViT-Nope", pretrained="none"))
    assert e.value.key == "model.name"


def test_random_weights_are_announced_loudly(caplog):
    cfg = ModelConfig(name="lakecurate-tiny", pretrained="none")
    with caplog.at_level("WARNING"):
        assert ensure_weights(cfg) == (None, False)
    assert any("RANDOM WEIGHTS" in r.message and r.levelname == "WARNING" for r in caplog.records)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_loads_and_names_the_model_id(tmp_path, records, suffix):
    """A checkpoint file is used as given (weights_only for .pt) and hashed into model_id."""
    from safetensors.torch import save_file

    source = C.load_model(TINY).model
    with torch.no_grad():  # weights that differ from the seeded random init
        state = {k: (v * 0.5 + 0.01).contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"tiny{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    cfg = ModelConfig(name="lakecurate-tiny", pretrained=str(path), precision="fp32")
    assert ensure_weights(cfg) == (str(path), False)
    assert model_id(cfg).startswith(f"lakecurate-tiny/tiny{suffix}@")
    loaded = C.load_model(C.ClipSpec("lakecurate-tiny", str(path), "fp32", "cpu"))
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, state[k])
