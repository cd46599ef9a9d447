"""Occupancy arithmetic against hand-computed SM120 numbers."""

from fa4_sm120.occupancy import SM90, SM120, ctas_per_sm, emulated_launch_smem


def test_sm120_ctas_per_sm():
    assert ctas_per_sm(65_536, 255, 128) == 1  # 64 KB tile: one CTA fits 100 KB
    assert ctas_per_sm(32_768, 200, 128) == 2  # registers: 200 -> 6,400 per warp -> 2 CTAs of 4 warps
    assert ctas_per_sm(24_576, 128, 256) == 2  # registers: 8 warps x 4,096
    assert ctas_per_sm(8_192, 32, 512) == 3  # warps: 48 / 16


def test_emulation_keeps_hopper_at_sm120_occupancy():
    for smem, regs, threads in (
        (65_536, 255, 128),
        (32_768, 168, 128),
        (49_152, 128, 256),
        (98_304, 255, 256),
    ):
        occ120 = ctas_per_sm(smem, regs, threads, SM120)
        launch = emulated_launch_smem(smem, regs, threads)
        assert launch >= smem
        assert ctas_per_sm(launch, regs, threads, SM90) == occ120
