"""classbalanced.integrations.transformers with the real Trainer: tiny randomly initialised
BERT / DistilBERT models built from configs (no download), a synthetic long-tailed text set,
a few CPU steps; every loss the Trainer used is recomputed with cb.class_balanced_loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import classbalanced as cb
from classbalanced.integrations import transformers as cbt

transformers = pytest.importorskip(
    "transformers",
    reason="needs the [transformers] extra: pip install 'classbalanced[transformers]'",
)
datasets = pytest.importorskip("datasets", reason="needs the [transformers] extra (datasets)")
pytest.importorskip("accelerate", reason="needs the [transformers] extra (accelerate)")

COUNTS = [16, 6, 2]  # the long tail: 24 examples, 3 classes
VOCAB, SEQ = 24, 8


def long_tailed_texts(seed: int = 0):
    """Token-id "sentences" (class c contains the word 4 + c), labels 0..2 with COUNTS."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    rng.shuffle(labels)
    ids = rng.integers(8, VOCAB, size=(len(labels), SEQ))
    ids[:, 0] = 2  # [CLS]
    ids[np.arange(len(labels)), rng.integers(1, SEQ, size=len(labels))] = 4 + labels
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int64")),
            "attention_mask": datasets.Sequence(datasets.Value("int64")),
            "label": datasets.ClassLabel(num_classes=len(COUNTS)),
        }
    )
    return datasets.Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist(), "label": labels},
        features=features,
    )


def tiny_model(family: str):
    common = dict(vocab_size=VOCAB, max_position_embeddings=SEQ, num_labels=len(COUNTS))
    if family == "bert":
        config = transformers.BertConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            **common,
        )
        return transformers.BertForSequenceClassification(config)
    config = transformers.DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=32, **common)
    return transformers.DistilBertForSequenceClassification(config)


def recording(loss_func, records: list):
    """loss_func, keeping each call's logits, labels, num_items_in_batch, weights and loss."""

    def call(outputs, labels, num_items_in_batch=None):
        loss = loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        weight = None if loss_func.weight is None else loss_func.weight.clone()
        records.append((outputs.logits.detach(), labels, num_items_in_batch, weight, loss.detach()))
        return loss

    return call


def trainer(model, dataset, loss_func, tmp_path, callbacks=(), **args):
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no",
        logging_strategy="no", eval_strategy="no", disable_tqdm=True, learning_rate=1e-3,
        dataloader_num_workers=0, seed=0, **args,
    )  # fmt: skip
    return transformers.Trainer(
        model=model, args=arguments, train_dataset=dataset, compute_loss_func=loss_func,
        callbacks=list(callbacks),
    )  # fmt: skip


def test_class_counts_of_a_dataset_list_and_multi_hot_column():
    dataset = long_tailed_texts()
    assert cbt.class_counts(dataset).tolist() == COUNTS
    assert cbt.class_counts(dataset["label"][:3], num_labels=3).sum() == 3
    multi = datasets.Dataset.from_dict({"labels": [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]})
    assert cbt.class_counts(multi, label_column="labels").tolist() == [1, 0, 2]
    index_lists = datasets.Dataset.from_dict(
        {"labels": [[0, 2], [2], [], [1, 2]]},
        features=datasets.Features(
            {"labels": datasets.Sequence(datasets.ClassLabel(num_classes=4))}
        ),
    )
    assert cbt.class_counts(index_lists, label_column="labels").tolist() == [1, 1, 3, 0]
    with pytest.raises(ValueError, match="no column 'labels'"):
        cbt.class_counts(dataset, label_column="labels")
    with pytest.raises(TypeError, match=r"one split \(e\.g\. dataset\['train'\]\)"):
        cbt.class_counts(datasets.DatasetDict({"train": dataset}))
    with pytest.raises(ValueError, match="expected num_labels=2"):
        cbt.class_counts(dataset, num_labels=2)


def test_trainer_loss_is_the_class_balanced_sum_over_the_accumulated_batch(tmp_path):
    """Each micro-batch's loss is sum / num_items_in_batch, num_items counting both
    micro-batches, so the two add up to the mean over the large batch."""
    dataset, model = long_tailed_texts(), tiny_model("bert")
    counts = cbt.class_counts(dataset)
    options = dict(beta=0.99, loss_type="softmax")
    loss_func, records = cbt.class_balanced_loss_func(counts, **options), []
    before = model.classifier.weight.detach().clone()
    trainer(
        model, dataset, recording(loss_func, records), tmp_path,
        per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=2,
    ).train()  # fmt: skip
    assert len(records) == 4 and not torch.equal(before, model.classifier.weight)
    for logits, labels, n, _, loss in records:
        assert int(n) == 8
        expected = cb.class_balanced_loss(logits, labels, counts, **options, reduction="sum") / 8
        torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    for first, second in (records[:2], records[2:]):
        logits, labels = torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])
        large_batch = cb.class_balanced_loss(logits, labels, counts, **options)
        torch.testing.assert_close(first[-1] + second[-1], large_batch, rtol=1e-5, atol=0)


def test_drw_switches_the_weights_at_the_named_epoch_and_the_prior_bias_is_set(tmp_path):
    dataset, model = long_tailed_texts(), tiny_model("distilbert")
    counts = cbt.class_counts(dataset)
    head = cbt.init_prior_bias_(model)
    assert head is model.classifier
    torch.testing.assert_close(torch.sigmoid(head.bias.detach()), torch.full((3,), 1 / 3))
    options = dict(loss_type="focal", gamma=1.0)
    loss_func = cbt.class_balanced_loss_func(
        counts, beta=0.999, **options, reweight_schedule="drw", start_epoch=2
    )
    records: list = []
    run = trainer(
        model, dataset, recording(loss_func, records), tmp_path,
        callbacks=[cbt.ReweightCallback(loss_func)], per_device_train_batch_size=8,
        per_device_eval_batch_size=8, num_train_epochs=3,
    )  # fmt: skip

    def eval_loss_is_the_class_balanced_mean(beta):
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(dataset["input_ids"])).logits
        labels = torch.tensor(dataset["label"])
        expected = cb.class_balanced_loss(logits, labels, counts, beta=beta, **options)
        found = run.evaluate(eval_dataset=dataset)["eval_loss"]
        assert found == pytest.approx(expected.item(), rel=1e-5)

    eval_loss_is_the_class_balanced_mean(beta=0.0)  # epoch 0 of DRW: unweighted
    records.clear()
    run.train()
    assert len(records) == 9  # 3 epochs of 3 steps
    for step, (logits, labels, n, weight, loss) in enumerate(records):
        beta = 0.999 if step // 3 >= 2 else 0.0
        if beta:
            torch.testing.assert_close(weight, cb.class_balanced_weights(counts, 0.999))
        else:
            assert weight is None
        expected = cb.class_balanced_loss(
            logits, labels, counts, beta=beta, **options, reduction="sum"
        )
        torch.testing.assert_close(loss, expected / int(n), rtol=1e-6, atol=0)
    eval_loss_is_the_class_balanced_mean(beta=0.999)


def test_loss_func_multi_label_ignored_rows_and_tuple_outputs():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=generator)
    multi_hot = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]]).float()
    counts = cbt.class_counts(multi_hot)
    f = cbt.class_balanced_loss_func(counts, beta=0.9, loss_type="focal", gamma=2.0)
    expected = cb.class_balanced_loss(
        logits, multi_hot, counts, beta=0.9, loss_type="focal", gamma=2.0
    )
    torch.testing.assert_close(f({"logits": logits}, multi_hot), expected)
    total = cb.class_balanced_loss(
        logits, multi_hot, counts, beta=0.9, loss_type="focal", gamma=2.0, reduction="sum"
    )
    torch.testing.assert_close(f((logits,), multi_hot, num_items_in_batch=15), total / 15)
    # a -100 row counts neither in the loss nor in Transformers' num_items_in_batch
    g = cbt.class_balanced_loss_func([5, 3, 1], beta=0.99, loss_type="softmax")
    labels = torch.tensor([0, -100, 2, 1, -100])
    kept = labels != -100
    reference = cb.class_balanced_loss(
        logits[kept], labels[kept], [5, 3, 1], beta=0.99, loss_type="softmax"
    )
    torch.testing.assert_close(g(logits, labels), reference)
    with pytest.raises(TypeError, match="class indices"):  # softmax takes no multi-hot rows
        g(logits, multi_hot)


def test_a_schedule_without_its_callback_is_refused_while_training():
    f = cbt.class_balanced_loss_func(
        [9, 1], beta=0.99, loss_type="softmax", reweight_schedule="drw"
    )
    logits = torch.zeros(2, 2, requires_grad=True)
    with pytest.raises(ValueError, match=r"callbacks=\[ReweightCallback\(loss_func\)\]"):
        f(logits, torch.tensor([0, 1]))
    f.set_epoch(0)
    assert f(logits, torch.tensor([0, 1])).requires_grad
    with pytest.raises(ValueError, match="without a schedule"):
        cbt.ReweightCallback(cbt.class_balanced_loss_func([9, 1], beta=0.9, loss_type="softmax"))


def test_prior_bias_finds_the_head_of_other_families_or_says_what_to_pass():
    roberta = transformers.RobertaForSequenceClassification(
        transformers.RobertaConfig(
            vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=8, max_position_embeddings=SEQ + 2, num_labels=5,
        )
    )  # fmt: skip
    head = cbt.init_prior_bias_(roberta)
    assert head is roberta.classifier.out_proj
    torch.testing.assert_close(
        head.bias.detach(), torch.full((5,), -np.log(4.0), dtype=torch.float32)
    )
    gpt2 = transformers.GPT2ForSequenceClassification(
        transformers.GPT2Config(vocab_size=VOCAB, n_embd=8, n_layer=1, n_head=2, num_labels=3)
    )
    with pytest.raises(ValueError, match="no bias"):
        cbt.init_prior_bias_(gpt2)
    custom = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"pass it, init_prior_bias_\(model, head=\.\.\.\)"):
        cbt.init_prior_bias_(custom)
    assert cbt.init_prior_bias_(custom, head=custom[0], prior=0.25) is custom[0]
    torch.testing.assert_close(
        custom[0].bias.detach(), torch.full((3,), -np.log(3.0), dtype=torch.float32)
    )
