"""`probes`: what `lakecurate probe` trained and measured, one row per event.

A probe is a small CLIP trained from scratch (or from `--init`) on a published dataset
version. `event` is `train` (the run: its version and pins, model, budget,
hyper-parameters, loss curve, checkpoint) or `eval:<set>` (its metrics on an eval set
that never enters the pool). Rows are only ever added.
"""

import pyarrow as pa

from lakecurate.schemas.base import TIMESTAMP, TableSpec, field

SPEC = TableSpec(
    name="probes",
    schema=pa.schema(
        [
            field("probe_id", pa.string(), False),
            field("event", pa.string(), False),  # train | eval:<set>
            field("dataset", pa.string()),  # NAME@V trained on
            field("pinned_versions", pa.string()),  # JSON {table: delta version} of it
            field("model", pa.string()),  # open_clip config name
            field("model_cfg", pa.string()),  # JSON: the config itself
            field("init", pa.string()),  # checkpoint trained from, or null: from scratch
            field("samples", pa.int64()),  # the budget: samples seen
            field("hparams", pa.string()),  # JSON: batch, lr, weight decay, warmup, ...
            field("seed", pa.int64()),
            field("device", pa.string()),
            field("seconds", pa.float64()),
            field("final_loss", pa.float64()),
            field("loss_curve", pa.string()),  # JSON [[samples seen, loss], ...]
            field("eval_set", pa.string()),
            field("metrics", pa.string()),  # JSON {metric: value}
            field("checkpoint_uri", pa.string()),
            field("run_id", pa.string()),
            field("created_at", TIMESTAMP),
        ]
    ),
    key=("probe_id", "event"),
)
