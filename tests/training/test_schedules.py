"""Schedules in epochs: learning-rate shapes, progressive resizing, weight-average decay."""
import math

import pytest

from fkd_ffcv.training.schedules import ema_decay, lr_factor, resolution


def test_cyclic_is_ffcvs_triangle():
    f = lambda e: lr_factor(e, schedule='cyclic', epochs=16, peak_epoch=2)
    assert [f(0), f(1), f(2), f(9), f(16)] == [0, 0.5, 1, 0.5, 0]


def test_step_and_cosine_with_warmup():
    step = lambda e: lr_factor(e, schedule='step', epochs=90, warmup_epochs=5,
                               step_length=30, step_ratio=0.1)
    assert step(2.5) == 0.5 and step(10) == 1 and step(30) == pytest.approx(0.1)
    assert step(89) == pytest.approx(0.01)
    cos = lambda e: lr_factor(e, schedule='cosine', epochs=100, warmup_epochs=10,
                              end_factor=0.01)
    assert cos(5) == 0.5 and cos(10) == 1 and cos(100) == pytest.approx(0.01)
    assert cos(55) == pytest.approx(0.01 + 0.99 * 0.5)
    with pytest.raises(ValueError, match='linear'):
        lr_factor(1, schedule='linear', epochs=10)


def test_progressive_resizing_ramps_in_multiples():
    r = lambda e: resolution(e, min_res=160, max_res=192, start_ramp=10, end_ramp=13)
    assert [r(0), r(10), r(11.5), r(13), r(40)] == [160, 160, 192, 192, 192]
    assert r(10.4) == 160 and r(12) == 192  # 170.7 -> 160, 181.3 -> 192 (nearest multiple)
    assert resolution(3, min_res=32, max_res=32, start_ramp=0, end_ramp=0) == 32


def test_ema_time_constant_is_in_epochs():
    d = ema_decay(2.0, 50)
    assert d ** 100 == pytest.approx(math.exp(-1))


def test_step_epochs_name_the_decays_and_bad_lists_are_refused():
    from fkd_ffcv.training.schedules import step_epochs
    decays = step_epochs('100,180')
    f = lambda e: lr_factor(e, schedule='step', epochs=200, step_ratio=0.1, decays=decays)
    assert [f(e) for e in (0, 99, 100, 179, 180)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert step_epochs('') == ()
    for bad in ('100,80', 'a,b', '0,10'):
        with pytest.raises(ValueError, match=repr(bad)):
            step_epochs(bad)
