"""Nothing that does nothing passes silently: fan-in <= K, non-finite weights into lower(), inapplicable table columns."""
from iprune_tf.export.run_files import ExportRow, format_export_table


def test_export_table_prints_a_dash_where_a_column_does_not_apply():
    rows = [
        ExportRow("verilog", "/x/verilog/net.v", 5000, "iverilog", 1.0, None),
        ExportRow("npz", "/x/pruned_sparse.npz", 900, "numpy", 1.0, 2.5e-7, payload_bytes=640),
        ExportRow("c", "/x/pruned.c", 7000, "qemu-m3", 1.0, 0.0, 1024, 640, 40000),
    ]
    table = format_export_table(rows)
    assert "nan" not in table.lower()
    cells = {line.split()[0]: line.split()[2:] for line in table.splitlines()[2:]}
    # bytes, payload, runtime, agreement, max |diff|, arena, flash
    assert cells["verilog"] == ["5000", "-", "iverilog", "100.00%", "-", "-", "-"]
    assert cells["npz"] == ["900", "640", "numpy", "100.00%", "2.5e-07", "-", "-"]
    assert cells["c"] == ["7000", "640", "qemu-m3", "100.00%", "0", "1024", "40000"]
