def test_pairs_lake_holds_the_sample_pairs(spark, pairs_lake, sample_set):
    df = pairs_lake.read(spark, "pairs")
    rows = sample_set.pair_rows()
    assert df.count() == len(rows)
    assert df.select("uid").distinct().count() == len(rows)
    # bad records (corrupt, empty caption, too small) are not among the rows
    bad_keys = {k for k, _ in sample_set.labels["bad"]}
    assert not bad_keys & {r["source_key"] for r in rows}
