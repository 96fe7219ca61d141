"""Every configuration of ``bench/lut_accuracy.py``, in the order tried: screens (``s_*``, run on the validation
split) and finals (``f_*``, 3 seeds on the test set). Each is a dict of the training recipe: hidden widths, input
``encoding``, epochs per phase, rate and its decay, ``ks``, ``head``; ``dense_from`` reuses another configuration's dense
net (a paired comparison), ``tables_from`` fine-tunes the truth tables of another configuration's pruned nets.
"""
# Every configuration tried. lr_decay "cosine": constant rate while pruning, then per step a cosine
# decay to 1% over retraining. Both K are pruned from the same binary dense net.
CONFIGS = {
    # What the shared machine allowed: 2 cores, up to ~20 runnable processes, nice 15 jobs at times at
    # ~3% of a core. Two earlier 1024-wide runs (10/10/15 and 2/2/2 epochs) ran ~800 s per epoch then
    # and were stopped in their first epoch.
    "w256_t3_short": dict(hidden=256, encoding="thermometer:3", epochs_dense=2, epochs_prune=1,
                          epochs_retrain=1, lr=3e-3, lr_decay="cosine", ks=(6, 8)),
    "w512_t3": dict(hidden=512, encoding="thermometer:3", epochs_dense=3, epochs_prune=2,
                    epochs_retrain=2, lr=3e-3, lr_decay="cosine", ks=(8, 6)),
    # The main job's epoch budget (10/10/15) on the 512-wide net, trained at nice 19 beside the 3-seed runs.
    "w512_t3_long": dict(hidden=512, encoding="thermometer:3", epochs_dense=10, epochs_prune=10,
                         epochs_retrain=15, lr=3e-3, lr_decay="cosine", ks=(6, 8)),
    "w1024_t3": dict(hidden=1024, encoding="thermometer:3", epochs_dense=4, epochs_prune=3,
                     epochs_retrain=5, lr=3e-3, lr_decay="cosine", ks=(8, 6)),
    # w1024_t3's dense net (copied, the same 4 epochs) pruned over 6 epochs instead of 3: a slower schedule
    # gained BinaryConnect K=8 0.2 points (bench/README.md, issue 13).
    "w1024_t3_p6": dict(hidden=1024, encoding="thermometer:3", epochs_dense=4, epochs_prune=6,
                        epochs_retrain=5, lr=3e-3, lr_decay="cosine", ks=(8, 6)),
    # The MNIST preset's width with a longer dense phase: pruning costs the 1024-wide net little (K=8 0.24
    # points under its dense net), so the dense net is the ceiling. The 512-wide long run lengthened
    # pruning and retraining too, and lost K=6 accuracy; here only the dense phase grows.
    "w1024_t3_d10": dict(hidden=1024, encoding="thermometer:3", epochs_dense=10, epochs_prune=3,
                         epochs_retrain=5, lr=3e-3, lr_decay="cosine", ks=(8, 6)),
    # Issue 19, LUT-sized heads at 1024-500 (the last width a multiple of the 10 classes; 50 voters per class
    # for groupsum), the main job's last halving, cosine retraining. The dense and pruned:32 heads are pruned
    # from the same dense net (one output layer; only the pruning differs), groupsum has its own (no output layer).
    "h1024x500_dense": dict(hidden=(1024, 500), encoding="thermometer:3", epochs_dense=4, epochs_prune=3,
                            epochs_retrain=3, lr=3e-3, lr_decay="cosine", last_halving=0.6, ks=(6,), head="dense"),
    "h1024x500_pruned32": dict(hidden=(1024, 500), encoding="thermometer:3", epochs_dense=4, epochs_prune=3,
                               epochs_retrain=3, lr=3e-3, lr_decay="cosine", last_halving=0.6, ks=(6,),
                               head="pruned:32", dense_from="h1024x500_dense"),
    "h1024x500_groupsum": dict(hidden=(1024, 500), encoding="thermometer:3", epochs_dense=4, epochs_prune=3,
                               epochs_retrain=3, lr=3e-3, lr_decay="cosine", last_halving=0.6, ks=(6, 8),
                               head="groupsum"),
    # The same head at 512-500: the machine's two long-job slots were taken, so a smaller run first (3 + 2 + 2
    # epochs, as w512_t3, the dense head's 512-wide point).
    "w512x500_groupsum": dict(hidden=(512, 500), encoding="thermometer:3", epochs_dense=3, epochs_prune=2,
                              epochs_retrain=2, lr=3e-3, lr_decay="cosine", last_halving=0.6, ks=(6, 8),
                              head="groupsum"),
    # Issue 20: a net for an iCE40 (bench/fpga.py): K=4 (one neuron, one LUT4), 256-500 with the groupsum head
    # (no output weights: per class a popcount of 50 bits), the budget of the h1024x500 runs.
    "ice40_gs_k4": dict(hidden=(256, 500), encoding="thermometer:3", epochs_dense=4, epochs_prune=3,
                        epochs_retrain=3, lr=3e-3, lr_decay="cosine", last_halving=0.6, ks=(4,), head="groupsum"),
}
# Lever screens on the validation split (--validation: trained on 55,000, evaluated on the last 5,000 training
# images), seed 0, each against its baseline: the groupsum head at 512-500, 3 + 2 + 2 epochs.
_SCREEN = dict(hidden=(512, 500), encoding="thermometer:3", epochs_dense=3, epochs_prune=2, epochs_retrain=2, lr=3e-3,
               lr_decay="cosine", last_halving=0.6, ks=(6,), head="groupsum")
CONFIGS.update({
    "s_gs": _SCREEN,
    "s_gs_quantile": {**_SCREEN, "encoding": "quantile:3"},  # input thresholds fitted to the data
    "s_gs_t7": {**_SCREEN, "encoding": "thermometer:7"},  # more thermometer levels
    "s_gs_1024": {**_SCREEN, "hidden": (1024, 500)},  # a wider first hidden layer
    "s_gs_1000": {**_SCREEN, "hidden": (512, 1000)},  # 100 voters per class
    "s_gs_long": {**_SCREEN, "epochs_dense": 6, "epochs_prune": 4, "epochs_retrain": 4},  # twice the budget
    # the heads paired on one dense net (the dense head's): dense vs pruned to K_OUT
    "s_dense": {**_SCREEN, "head": "dense"},
    "s_p32": {**_SCREEN, "head": "pruned:32", "dense_from": "s_dense"},
    "s_p6": {**_SCREEN, "head": "pruned:6", "dense_from": "s_dense"},
    "s_dense_1024": {**_SCREEN, "hidden": (1024, 500), "head": "dense"},
    "s_p32_1024": {**_SCREEN, "hidden": (1024, 500), "head": "pruned:32", "dense_from": "s_dense_1024"},
})
# Issue 19, session 2: the levers not yet screened, each for the pruned:32 head paired on s_dense's net where the lever
# allows it: the main job's longer pruning and retraining (15 + 10 epochs) on the same dense net, its whole budget
# (10 + 15 + 10: a dense net of its own), 7 thermometer levels (a dense net of its own).
CONFIGS.update({
    "s_p32_pr25": {**CONFIGS["s_p32"], "epochs_prune": 15, "epochs_retrain": 10},
    "s_dense_long": {**CONFIGS["s_dense"], "epochs_dense": 10, "epochs_prune": 15, "epochs_retrain": 10},
    "s_p32_long": {**CONFIGS["s_p32"], "epochs_dense": 10, "epochs_prune": 15, "epochs_retrain": 10,
                   "dense_from": "s_dense_long"},
    "s_dense_t7": {**CONFIGS["s_dense"], "encoding": "thermometer:7"},
    "s_p32_t7": {**CONFIGS["s_p32"], "encoding": "thermometer:7", "dense_from": "s_dense_t7"},
    # distillation (iprune_tf.workflow.distill, weight 0.5) from s_dense's full-precision net: in the pruned phase only,
    # on s_dense's binary net (paired with s_p32); in both phases (a distilled dense net of its own). s_p32_kd and
    # s_p32_kd2 ran with the first loss, a squared distance to the clipped teacher scores (commit 1fb3d96); s_p32_kdh
    # with today's, a square hinge on the teacher's side.
    "s_p32_kd": {**CONFIGS["s_p32"], "distill": 0.5},
    "s_dense_kd": {**CONFIGS["s_dense"], "distill": 0.5},
    "s_p32_kd2": {**CONFIGS["s_p32"], "distill": 0.5, "dense_from": "s_dense_kd"},
    "s_p32_kdh": {**CONFIGS["s_p32"], "distill": 0.5},
    # the two levers that helped, together: 7 levels and 15 + 10 epochs of pruning and retraining (paired with s_p32_t7)
    "s_p32_t7_pr25": {**CONFIGS["s_p32"], "encoding": "thermometer:7", "dense_from": "s_dense_t7", "epochs_prune": 15,
                      "epochs_retrain": 10},
})
# The final configuration, 3 seeds on the full training set, tested once: the head the screens chose (pruned:32;
# 1024 wide gained +0.18 on one seed, within noise: not kept), issue 11's budget (4 + 3 + 5 epochs) with the last
# halving and cosine retraining; today's dense head pruned from the same dense nets for the paired comparison.
CONFIGS["f_dense"] = {**_SCREEN, "head": "dense", "epochs_dense": 4, "epochs_prune": 3, "epochs_retrain": 5}
CONFIGS["f_p32"] = {**CONFIGS["f_dense"], "head": "pruned:32", "dense_from": "f_dense", "ks": (6, 8)}
# Session 2's final: the levers the screens kept (7 thermometer levels, 15 + 10 epochs of pruning and retraining after 3
# dense ones, as screened), 3 seeds; the dense head pruned from the same dense nets for the paired comparison.
CONFIGS["f_dense_t7"] = {**_SCREEN, "head": "dense", "encoding": "thermometer:7", "epochs_prune": 15, "epochs_retrain": 10}
CONFIGS["f_p32_t7"] = {**CONFIGS["f_dense_t7"], "head": "pruned:32", "dense_from": "f_dense_t7"}
# Session 3: truth tables fine-tuned per LUT neuron (iprune_tf.workflow.tables) on the K nets of a trained configuration
# (tables_from): table_epochs epochs of Adam at table_lr with a cosine decay to 0, tables started at table_margin per unit
# of (sum - threshold) (the screens of bench/results/lut_tables.json chose 10 epochs, 3e-3, 0.05); the head's ±1 weights
# stay, its batch norm trains; no weight decay (the recipe's goes to the output layer's weights, frozen here).
_TABLES = dict(table_epochs=10, table_lr=3e-3, table_margin=0.05)


def _tables_at_1e2(source, **changes):
    """The configuration that fine-tunes ``source``'s pruned nets' truth tables at rate 1e-2 (session 4's kept rate)."""
    return {**CONFIGS[source], **_TABLES, "table_lr": 1e-2, "tables_from": source, **changes}


CONFIGS["s_p32_t7_pr25_tables"] = {**CONFIGS["s_p32_t7_pr25"], **_TABLES, "tables_from": "s_p32_t7_pr25"}
CONFIGS["f_p32_t7_tables"] = {**CONFIGS["f_p32_t7"], **_TABLES, "tables_from": "f_p32_t7"}
# Session 4: the table phase's rate, screened on the same s_p32_t7_pr25 nets (seeds 0 and 1); K=8 with tables
# from session 1's f_p32 K=8 net (3 levels, 4 + 3 + 5 epochs: the only K=8 pruned:32 net trained).
CONFIGS["s_p32_t7_pr25_tables_lr1e2"] = {**CONFIGS["s_p32_t7_pr25_tables"], "table_lr": 1e-2}
# The rate 1e-2 gained on both seeds (+0.32, +0.38): the final of session 4, from the same f_p32_t7 nets; K=8 likewise.
CONFIGS["f_p32_t7_tables_lr1e2"] = {**CONFIGS["f_p32_t7_tables"], "table_lr": 1e-2}
CONFIGS["f_p32_tables_lr1e2"] = _tables_at_1e2("f_p32", ks=(8,))
# Width within the 3,000-LUT6 budget: 1024-500 (about 1,024 + 500 + 1,170 LUT6 with the pruned:32 head), the kept recipe
# (7 levels, 3 + 15 + 10 epochs, then 10 epochs of tables at 1e-2); its own dense net, so compared over seeds with
# s_p32_t7_pr25_tables_lr1e2, not paired.
CONFIGS["s_dense_t7_1024"] = {**CONFIGS["s_dense_t7"], "hidden": (1024, 500)}
CONFIGS["s_p32_t7_pr25_1024"] = {**CONFIGS["s_p32_t7_pr25"], "hidden": (1024, 500), "dense_from": "s_dense_t7_1024"}
CONFIGS["s_p32_t7_pr25_1024_tables_lr1e2"] = _tables_at_1e2("s_p32_t7_pr25_1024")
# Session 6: 1024-500 with tables gained +0.84 on validation seed 0 (87.10% against 86.26%) and lost 0.22 on seed 1
# (86.54% against 86.76%): not kept. Its finals (3 seeds, the recipe of f_p32_t7_tables_lr1e2) stay defined, not run.
CONFIGS["f_dense_t7_1024"] = {**CONFIGS["f_dense_t7"], "hidden": (1024, 500)}
CONFIGS["f_p32_t7_1024"] = {**CONFIGS["f_p32_t7"], "hidden": (1024, 500), "dense_from": "f_dense_t7_1024"}
CONFIGS["f_p32_t7_1024_tables_lr1e2"] = _tables_at_1e2("f_p32_t7_1024")
# Session 6: the other way to spend the budget, a wider second layer: 512-1000 (about 512 + 1,000 + 1,170 LUT6).
CONFIGS["s_dense_t7_1000"] = {**CONFIGS["s_dense_t7"], "hidden": (512, 1000)}
CONFIGS["s_p32_t7_pr25_1000"] = {**CONFIGS["s_p32_t7_pr25"], "hidden": (512, 1000), "dense_from": "s_dense_t7_1000"}
CONFIGS["s_p32_t7_pr25_1000_tables_lr1e2"] = _tables_at_1e2("s_p32_t7_pr25_1000")
# Session 7: two levers that cost few LUTs or none, screened on the validation split (seeds 0 and 1) against
# s_p32_t7_pr25_tables_lr1e2: a head of 48 inputs per class (pruned:48, about +550 LUT6 over pruned:32's ~1,160), pruned
# from s_dense_t7's nets (paired); 15 thermometer levels (11,760 input bits; the input code is outside the counted
# network, as the 7 levels' is), a dense net of its own.
CONFIGS["s_p48_t7_pr25"] = {**CONFIGS["s_p32_t7_pr25"], "head": "pruned:48"}
CONFIGS["s_p48_t7_pr25_tables_lr1e2"] = _tables_at_1e2("s_p48_t7_pr25")
CONFIGS["s_dense_t15"] = {**CONFIGS["s_dense_t7"], "encoding": "thermometer:15"}
CONFIGS["s_p32_t15_pr25"] = {**CONFIGS["s_p32_t7_pr25"], "encoding": "thermometer:15", "dense_from": "s_dense_t15"}
CONFIGS["s_p32_t15_pr25_tables_lr1e2"] = _tables_at_1e2("s_p32_t15_pr25")
# Session 7: the truth tables overfit (seed 1 of s_p32_t7_pr25_1024: training accuracy 85.5% → 89.0% over the 10 table
# epochs, validation 85.8% → 86.5%), where the pruned nets underfit. Mirror images double the table phase's training set:
# paired on the same pruned nets as s_p32_t7_pr25_tables_lr1e2.
CONFIGS["s_p32_t7_pr25_tables_lr1e2_flip"] = {**CONFIGS["s_p32_t7_pr25_tables_lr1e2"], "augment": "flip"}
# The mirror images lost 0.66 ± 0.34 (each neuron's inputs are fixed pixels). Fresh pixel noise instead (std 0.1, about
# one thermometer step), on the same pruned nets.
CONFIGS["s_p32_t7_pr25_tables_lr1e2_noise10"] = {**CONFIGS["s_p32_t7_pr25_tables_lr1e2"], "augment": "noise:0.1"}
# Both regularizers lost (noise −1.01 ± 0.18): the tables gain from fitting. Twice the table epochs instead (20, the same
# rate and cosine decay), on the same pruned nets.
CONFIGS["s_p32_t7_pr25_tables20_lr1e2"] = {**CONFIGS["s_p32_t7_pr25_tables_lr1e2"], "table_epochs": 20}
# A pruned:32 head reads at most 320 of the last hidden layer's 500 bits, so a wider head lets it use the rest. 64 inputs
# per class: about 2,300 LUT6 with affine scores, about 1,500 with rank-table scores (within the budget with ranks only).
CONFIGS["s_p64_t7_pr25"] = {**CONFIGS["s_p32_t7_pr25"], "head": "pruned:64"}
CONFIGS["s_p64_t7_pr25_tables_lr1e2"] = _tables_at_1e2("s_p64_t7_pr25")
# pruned:64 gained on both validation seeds with the tables (+0.20, +0.36; pruned:48 only on one): its finals, 3 seeds on
# the f_dense_t7 dense nets, the K=6 finals' recipe (15 + 10 epochs, then 10 epochs of tables at 1e-2).
CONFIGS["f_p64_t7"] = {**CONFIGS["f_p32_t7"], "head": "pruned:64"}
CONFIGS["f_p64_t7_tables_lr1e2"] = _tables_at_1e2("f_p64_t7")
# Session 8: two more ways to spend the K=6 budget, screened on the validation split (seeds 0 and 1) against
# s_p64_t7_pr25_tables_lr1e2: a head of 80 inputs per class (about +350 LUT6 over pruned:64's ~1,460), paired on
# s_dense_t7's nets; 15 thermometer levels with the pruned:64 head (no LUT6: the input code is outside the counted
# network), a dense net of its own (s_dense_t15). K=8 runs f_p64_t7 and its tables with --k 8 on the same dense nets.
CONFIGS["s_p80_t7_pr25"] = {**CONFIGS["s_p32_t7_pr25"], "head": "pruned:80"}
CONFIGS["s_p80_t7_pr25_tables_lr1e2"] = _tables_at_1e2("s_p80_t7_pr25")
CONFIGS["s_p64_t15_pr25"] = {**CONFIGS["s_p32_t15_pr25"], "head": "pruned:64"}
CONFIGS["s_p64_t15_pr25_tables_lr1e2"] = _tables_at_1e2("s_p64_t15_pr25")
# 15 levels with pruned:64, if kept on validation: its finals, 3 seeds on dense nets of their own (3 epochs, as
# f_dense_t7's), the K=6 finals' recipe.
CONFIGS["f_dense_t15"] = {**CONFIGS["f_dense_t7"], "encoding": "thermometer:15"}
CONFIGS["f_p64_t15"] = {**CONFIGS["f_p64_t7"], "encoding": "thermometer:15", "dense_from": "f_dense_t15"}
CONFIGS["f_p64_t15_tables_lr1e2"] = _tables_at_1e2("f_p64_t15")
# Session 9: the truth tables overfit (training accuracy above validation by 2-3 points) where the threshold students of
# the distillation screens underfit. Distillation (weight 0.5, the hinge form) from the dense run's full-precision net in
# the table phase only, on the same pruned nets as the kept recipe (paired with s_p64_t7_pr25_tables_lr1e2). The teacher
# trains 20 epochs on screens and finals alike (a dense run's whole budget would be 7 epochs for s_dense_t7, 28 for
# f_dense_t7).
_KD = dict(distill=0.5, teacher_epochs=20)
CONFIGS["s_p64_t7_pr25_tables_lr1e2_kd"] = {**CONFIGS["s_p64_t7_pr25_tables_lr1e2"], **_KD}
CONFIGS["f_p64_t7_tables_lr1e2_kd"] = {**CONFIGS["f_p64_t7_tables_lr1e2"], **_KD}
CONFIGS["s_p64_t7_pr25_tables_lr1e2_kd25"] = {**CONFIGS["s_p64_t7_pr25_tables_lr1e2_kd"], "distill": 0.25}
CONFIGS["s_p64_t7_pr25_tables_lr1e2_kd75"] = {**CONFIGS["s_p64_t7_pr25_tables_lr1e2_kd"], "distill": 0.75}
# Weight 0.75 gained on both validation seeds (+0.16, +0.38; 0.5: +0.00, +0.68; 0.25: −0.20, +0.44): its finals.
CONFIGS["f_p64_t7_tables_lr1e2_kd75"] = {**CONFIGS["f_p64_t7_tables_lr1e2_kd"], "distill": 0.75}
# Session 9, end: K=8 has no LUT budget, so a wider head: pruned:128 against pruned:64 at K=8, on s_dense_t7's nets
# (validation seed 0 only: the session's last half hour).
CONFIGS["s_p128_t7_pr25"] = {**CONFIGS["s_p64_t7_pr25"], "head": "pruned:128"}
CONFIGS["s_p128_t7_pr25_tables_lr1e2"] = _tables_at_1e2("s_p128_t7_pr25")
# Session 10: three more validation seeds (2, 3, 4) of session 8's s_p80_t7_pr25 screen, paired on s_dense_t7's nets
# as before (not kept: +0.18 ± 0.45 over five seeds with the tables, so no finals). After the carry-save popcounts (the
# pruned:64 head ~1,200 LUT6 instead of ~1,450) the 1024-500 net (about 1,024 + 500 + 1,200 LUT6) fits the budget with
# the pruned:64 head: screened on validation seeds 2 and 3 against s_p64_t7_pr25_tables_lr1e2 (dense nets of its own:
# compared over seeds, not paired; not kept: +0.12 ± 0.54, so no finals).
CONFIGS["s_p64_t7_pr25_1024"] = {**CONFIGS["s_p32_t7_pr25_1024"], "head": "pruned:64"}
CONFIGS["s_p64_t7_pr25_1024_tables_lr1e2"] = _tables_at_1e2("s_p64_t7_pr25_1024")
