"""The model contract: the tests every backbone must pass, written once (nequip's model-test mixins).

A model's test file adds its entry in a few lines and keeps only what is specific to it::

    from model_contract import O3, ModelContract

    class TestMyModelContract(ModelContract):
        symmetry = O3                       # TRANSLATION, SO3 (rotations only) or O3 (+ reflections)
        force_modes = ("direct", "conservative")
        variants = {"default": {}}          # named constructor-argument sets, each tested separately

        def make_model(self, **kw):         # fp64, statistics set, backend="torch" unless kw says
            return make_model(**kw)

``make_model(**kw)`` is called with ``forces``, ``compute_stress``, ``backend`` and a variant's
arguments; a variant that names ``forces`` itself is tested in that mode only. For every case
(variant × force mode) the contract checks, in fp64 and on a molecule plus a periodic cell (and the
entry's ``extra_systems()``):

- symmetry: E and the per-atom energies invariant, F (and σ) equivariant under the claimed group
  and translations; a claim is exact, so SO(3) models must *break* reflections and
  translation-only models rotations (else the claim should be stronger);
- permutation equivariance of E, per-atom energies and F;
- finite-difference forces (conservative) and the strain-derivative stress (conservative, periodic);
- cutoff smoothness: E and F continuous as a neighbour crosses the cutoff, an edge at the cutoff
  contributes nothing, edges beyond the model's cutoff (a longer neighbour list, checked with the
  symmetry) contribute nothing;
- N as the ledger records it (``count_parameters``: trainable, without the element table);
- every trainable parameter gets a nonzero gradient from the training loss;
- ``init_config`` names every constructor argument and rebuilds (through the checkpoint registry)
  a model that, with the same state_dict, gives bit-identical outputs, and returns what the model's
  hand-written ``init_config()`` returned before the base class recorded the arguments;
- backend parity: every other installed backend shares the state_dict and gives the torch values
  and parameter gradients, also on transformed inputs (``auto`` is checked against the torch
  reference copy in the FLOP test);
- FLOPs as the ledger measures them (``training.flops``): on a torch ``reference_copy``, a
  training step's count additive over the structures of a batch, affine in (edges, atoms,
  structures) where ``flops_affine``, and within ``train_flops_per_forward`` forwards.

Optional class attributes: ``stress`` (False: no stress case), ``train_flops_per_forward``,
``flops_affine``; methods ``extra_systems()`` and ``fd_systems()`` add model-specific geometry.
Model files reuse ``check_symmetry``, ``check_broken``, ``check_conservative``, ``standard_systems``,
``transformed`` and ``assert_rel_close`` for their own configurations.

Tolerances: fp64 rounding is ~1e-16 relative; the models are exact in exact arithmetic, so 1e-10
relative to the largest value leaves 10⁴–10⁶ of headroom for the summation-order differences
of rotated, permuted or differently-batched inputs and of other backends.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from batch_utils import batch_from_atoms
from scipy.spatial.transform import Rotation

from nnip_scale.data.batching import edge_layout

TRANSLATION, SO3, O3 = "translation", "SO3", "O3"
TOL = 1e-10  # relative, fp64 (module docstring)
OTHER_BACKENDS = ("native", "pyg", "cueq")


# ---------------------------------------------------------------------- helpers (also for model files)
def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b| (b's scale floored at 1e-12)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


def assert_rel_close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL, what: str = "") -> None:
    err = rel_err(a, b)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def standard_systems() -> list[Atoms]:
    """A rattled ethanol molecule and a rattled periodic 8-atom fcc Cu cell with two Al."""
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=1)
    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    cell.numbers[[1, 4]] = 13
    cell.rattle(0.05, seed=2)
    return [mol, cell]


def transformed(atoms: Atoms, Q: np.ndarray, shift) -> Atoms:
    """Copy of ``atoms`` with positions (and cell) mapped by x -> Q x + shift."""
    a = atoms.copy()
    a.positions = a.positions @ Q.T + shift
    if a.pbc.any():
        a.set_cell(a.cell.array @ Q.T, scale_atoms=False)
    return a


MIRROR = np.diag([1.0, 1.0, -1.0])


def group_elements(symmetry: str) -> list[np.ndarray]:
    """The orthogonal maps a model claiming ``symmetry`` must respect: none (translation only);
    two random rotations and a half turn that maps the z axis (an edge frame's axis) onto −z
    (SO3); two random rotations, a mirror, a rotoreflection and the inversion (O3)."""
    if symmetry == TRANSLATION:
        return []
    rots = Rotation.random(2, random_state=7).as_matrix()
    if symmetry == SO3:
        return [*rots, Rotation.from_rotvec([0.0, np.pi, 0.0]).as_matrix()]
    return [*rots, MIRROR, rots[0] @ MIRROR, -np.eye(3)]


@torch.no_grad()
def check_symmetry(model, atoms: list[Atoms], symmetry: str, tol: float = TOL, longer_list: float = 0.0) -> dict:
    """Assert E and per-atom energies invariant, F and σ equivariant under ``symmetry`` and a
    translation, on ``atoms`` in one batch. With ``longer_list`` > 0 the transformed copies get a
    neighbour list that much longer than the model's cutoff, so the check also asserts that edges
    beyond the cutoff contribute nothing. Returns the untransformed outputs."""
    batch = batch_from_atoms(atoms, model.cutoff)
    out = model(batch)
    assert float(out["forces"].abs().max()) > 1e-5, "forces ~ 0: the check would be 0 = 0"
    shift = np.array([1.3, -0.7, 2.1])
    for Q in group_elements(symmetry) or [np.eye(3)]:  # every map comes with the translation
        moved = batch_from_atoms([transformed(a, Q, shift) for a in atoms], model.cutoff + longer_list)
        assert longer_list == 0 or moved["n_edges"] > batch["n_edges"]
        out_q, Qt = model(moved), torch.as_tensor(Q)
        where = f"under {Q.round(3).tolist()}" + (f", neighbour list +{longer_list} Å" if longer_list else "")
        assert_rel_close(out_q["energy"], out["energy"], tol, f"energy {where}")
        assert_rel_close(out_q["energies"], out["energies"], tol, f"per-atom energies {where}")
        assert_rel_close(out_q["forces"], out["forces"] @ Qt.T, tol, f"forces {where}")
        if "stress" in out:
            assert_rel_close(out_q["stress"], Qt @ out["stress"] @ Qt.T, tol, f"stress {where}")
    return out


@torch.no_grad()
def check_broken(model, atoms: Atoms, maps: list[np.ndarray]) -> None:
    """Assert that each of ``maps`` is *not* a symmetry of ``model`` on ``atoms`` (energies and
    forces change by far more than rounding)."""
    out = model(batch_from_atoms([atoms], model.cutoff))
    for Q in maps:
        out_q = model(batch_from_atoms([transformed(atoms, Q, 0.0)], model.cutoff))
        assert rel_err(out_q["energy"], out["energy"]) > 1e-7, f"energy invariant under {Q.round(3).tolist()}"
        assert rel_err(out_q["forces"], out["forces"] @ torch.as_tensor(Q).T) > 1e-5, "forces equivariant"


def labelled(batch: dict, seed: int = 0) -> dict:
    """``batch`` with random energy and force labels (no loss term is zero at a label)."""
    rng = np.random.default_rng(seed)
    batch["energy"] = torch.as_tensor(rng.normal(size=batch["n_structures"]), dtype=batch["positions"].dtype)
    batch["forces"] = torch.as_tensor(rng.normal(size=(batch["n_atoms"], 3)), dtype=batch["positions"].dtype)
    return batch


def training_loss(model, batch: dict) -> torch.Tensor:
    from nnip_scale.training.loss import EnergyForceLoss

    return EnergyForceLoss()(model(batch), batch)["loss"]


def drop_pair(batch: dict, a: int, b: int) -> dict:
    """``batch`` without the edges a→b and b→a (still sorted by receiver; the edge layout recomputed)."""
    ei = batch["edge_index"]
    keep = ~(((ei[0] == a) & (ei[1] == b)) | ((ei[0] == b) & (ei[1] == a)))
    ptr, order = edge_layout(ei[:, keep], batch["n_atoms"])
    return dict(batch, edge_index=ei[:, keep], edge_shift=batch["edge_shift"][keep], n_edges=int(keep.sum()),
                edge_receiver_ptr=ptr, edge_sender_order=order)


def check_conservative(model, atoms: Atoms, probes, cutoff: float, h: float = 1e-5) -> None:
    """A conservative model's forces are a gradient: at each probed (atom, component) F = −∂E/∂r by
    central differences (1e-7 relative, as the contract's finite-difference test), and the
    finite-difference Hessian −∂F_a/∂r_b over the probed coordinates is symmetric (1e-6 of its
    largest entry, which must exceed 1e-3). For model files whose own configurations need it."""

    @torch.no_grad()  # evaluation: forces without a graph
    def run(m: Atoms) -> dict:
        return model(batch_from_atoms([m], cutoff))

    def displaced(atom: int, comp: int, step: float) -> Atoms:
        m = atoms.copy()
        m.positions[atom, comp] += step
        return m

    f = run(atoms)["forces"].numpy()
    hess = {}
    for atom, comp in probes:
        plus, minus = run(displaced(atom, comp, h)), run(displaced(atom, comp, -h))
        fd = -(float(plus["energy"][0]) - float(minus["energy"][0])) / (2 * h)
        assert abs(fd - f[atom, comp]) < 1e-7 * max(1.0, abs(fd)), (atom, comp, fd, f[atom, comp])
        diff = (plus["forces"].numpy() - minus["forces"].numpy()) / (2 * h)
        for other, comp2 in probes:
            hess[(atom, comp), (other, comp2)] = -diff[other, comp2]
    scale = max(abs(v) for v in hess.values())
    assert scale > 1e-3
    for a in probes:
        for b in probes:
            assert abs(hess[a, b] - hess[b, a]) < 1e-6 * scale, (a, b, hess[a, b], hess[b, a])

def _backend_param(name: str):
    from nnip_scale.ops import available_backends

    ok = name in available_backends()
    return pytest.param(name, id=name, marks=[] if ok else [pytest.mark.skip(reason=f"backend {name!r} not installed")])


# ---------------------------------------------------------------------- the contract
class ModelContract:
    """Mixin: subclass it as ``Test<Model>Contract`` (module docstring). Not collected itself."""

    #: TRANSLATION, SO3 or O3: the exact group (with translations and permutations) of the model
    symmetry: str = O3
    #: the force modes the model supports
    force_modes: tuple[str, ...] = ("direct", "conservative")
    #: named constructor-argument sets tested as separate cases (may pin ``forces``)
    variants: dict[str, dict] = {"default": {}}
    #: whether conservative cases compute the stress of periodic structures
    stress: bool = True
    #: bounds on (training-step FLOPs) / (forward FLOPs), direct and conservative alike
    train_flops_per_forward: tuple[float, float] = (2.5, 3.2)
    #: whether a batch's FLOPs are affine in its edge, atom and structure counts, as the ledger's
    #: cost model assumes (not GemNet-OC's: its triplet and quadruplet counts vary on their own)
    flops_affine: bool = True

    def make_model(self, **kw):
        """fp64 model with statistics set; ``kw``: forces, compute_stress, backend, a variant's args.
        Abstract: every contract class (``TestXContract(ModelContract)``) defines it."""
        raise TypeError(f"{type(self).__name__} must define make_model(**kw), the model factory of its contract")

    def extra_systems(self) -> list[Atoms]:
        """Model-specific geometries added to the symmetry, permutation and parity checks."""
        return []

    def fd_systems(self) -> list[tuple[Atoms, tuple[tuple[int, int], ...]]]:
        """(structure, (atom, component) probes) pairs of the finite-difference force check."""
        return [(standard_systems()[0], ((0, 0), (3, 1), (8, 2)))]

    # ------------------------------------------------------------------ cases
    def cases(self) -> dict[str, dict]:
        out = {}
        for vname, vargs in self.variants.items():
            for forces in self.force_modes:
                if vargs.get("forces", forces) != forces:
                    continue
                name = forces if len(self.variants) == 1 else f"{vname}-{forces}"
                stress = forces == "conservative" and self.stress
                out[name] = {**vargs, "forces": forces, "compute_stress": stress}
        return out

    def pytest_generate_tests(self, metafunc):
        """``case``: every case; ``conservative``: the conservative ones; ``stress_case``: those that
        compute stress; ``mode_case``: the first case of each force mode (variants run the same
        kinds of ops; one case per mode keeps the FLOP counting, the slowest check, cheap);
        ``backend``: the backends compared with torch."""
        cases = self.cases()
        first = {kw["forces"]: name for name, kw in reversed(cases.items())}.values()
        for fixture, keep in (("case", lambda name, kw: True),
                              ("conservative", lambda name, kw: kw["forces"] == "conservative"),
                              ("stress_case", lambda name, kw: kw["compute_stress"]),
                              ("mode_case", lambda name, kw: name in first)):
            if fixture in metafunc.fixturenames:
                chosen = {k: v for k, v in cases.items() if keep(k, v)}
                none = pytest.param(None, marks=pytest.mark.skip(reason=f"the model has no {fixture!r} case"))
                metafunc.parametrize(fixture, list(chosen.values()) or [none], ids=list(chosen) or ["none"])
        if "backend" in metafunc.fixturenames:
            metafunc.parametrize("backend", [_backend_param(b) for b in OTHER_BACKENDS])

    def build(self, case: dict, **kw):
        return self.make_model(**{"backend": "torch", **case, **kw})

    def systems(self) -> list[Atoms]:
        return standard_systems() + self.extra_systems()

    # ------------------------------------------------------------------ symmetry
    @torch.no_grad()  # evaluation: forces without a graph
    def test_symmetry(self, case):
        """Invariance/equivariance under the claimed group and translations, with the transformed
        copies on a neighbour list 0.5 Å longer than the cutoff (the data's list may be longer:
        edges beyond the cutoff must contribute nothing); and the claim is exact: the next larger
        group is broken."""
        model = self.build(case)
        check_symmetry(model, self.systems(), self.symmetry, longer_list=0.5)
        mol = standard_systems()[0]
        if self.symmetry == SO3:
            check_broken(model, mol, [MIRROR, -np.eye(3)])
        elif self.symmetry == TRANSLATION:
            check_broken(model, mol, [Rotation.from_euler("xyz", [0.4, 1.1, -0.3]).as_matrix()])

    @torch.no_grad()  # evaluation: forces without a graph
    def test_permutation_equivariance(self, case):
        model = self.build(case)
        atoms = self.systems()
        out = model(batch_from_atoms(atoms, model.cutoff))
        rng = np.random.default_rng(0)
        perms = [rng.permutation(len(a)) for a in atoms]
        out_p = model(batch_from_atoms([a[p] for a, p in zip(atoms, perms)], model.cutoff))
        offset = np.cumsum([0] + [len(a) for a in atoms])[:-1]
        full = torch.as_tensor(np.concatenate([p + o for p, o in zip(perms, offset)]))
        assert_rel_close(out_p["energy"], out["energy"], what="energy")
        assert_rel_close(out_p["energies"], out["energies"][full], what="per-atom energies")
        assert_rel_close(out_p["forces"], out["forces"][full], what="forces")
        if "stress" in out:
            assert_rel_close(out_p["stress"], out["stress"], what="stress")

    # ------------------------------------------------------------------ conservative mode
    @torch.no_grad()  # evaluation: forces without a graph
    def test_forces_match_finite_differences(self, conservative):
        """F = −∂E/∂r by central differences, h = 1e-5 Å: truncation ~h²·E''' ≈ 1e-10 and rounding
        ~1e-16·|E|/h ≈ 1e-10 eV/Å, so 1e-7 relative (1e-7 eV/Å absolute) is safe."""
        model = self.build(conservative, compute_stress=False)
        h = 1e-5
        for mol, probes in self.fd_systems():
            f = model(batch_from_atoms([mol], model.cutoff))["forces"]
            assert float(f.abs().max()) > 1e-3
            for atom, comp in probes:
                e = []
                for sign in (1, -1):
                    m2 = mol.copy()
                    m2.positions[atom, comp] += sign * h
                    e.append(float(model(batch_from_atoms([m2], model.cutoff))["energy"][0]))
                fd = -(e[0] - e[1]) / (2 * h)
                assert abs(fd - float(f[atom, comp])) < 1e-7 * max(1.0, abs(fd)), (atom, comp, fd, float(f[atom, comp]))

    @torch.no_grad()  # evaluation: forces without a graph
    def test_stress_matches_strain_derivative(self, stress_case):
        """σ_ab = (1/V)·∂E/∂ε_ab (symmetric strain, h = 1e-6) on the periodic cell; the molecule
        batched with it gets exactly zero stress; σ is symmetric and not trivially zero."""
        model = self.build(stress_case)
        mol, cu = standard_systems()
        out = model(batch_from_atoms([cu, mol], model.cutoff))
        sigma = out["stress"]
        assert torch.equal(sigma[1], torch.zeros(3, 3, dtype=sigma.dtype))
        assert float(sigma[0].abs().max()) > 1e-6
        assert torch.allclose(sigma[0], sigma[0].T, rtol=0, atol=1e-12)
        # h = 1e-6: rounding ~1e-16·|E|/(h·V) ≈ 1e-10 and truncation ~h² are far below 1e-6 eV/Å³
        vol, h = cu.get_volume(), 1e-6
        for a, b in [(0, 0), (1, 2)]:  # a diagonal and an off-diagonal component
            e = []
            for sign in (1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * h / (2 if a != b else 1)
                if a != b:
                    eps[b, a] += sign * h / 2
                c2 = cu.copy()
                c2.set_cell(cu.cell.array @ eps, scale_atoms=True)
                e.append(float(model(batch_from_atoms([c2], model.cutoff))["energy"][0]))
            fd = (e[0] - e[1]) / (2 * h) / vol
            assert abs(fd - float(sigma[0, a, b])) < 1e-6, (a, b, fd, float(sigma[0, a, b]))

    # ------------------------------------------------------------------ cutoff
    @torch.no_grad()  # evaluation: forces without a graph
    def test_smooth_as_a_neighbour_crosses_the_cutoff(self, case):
        """A hydrogen probe moves through the cutoff of its distance to a carbon (the pair's edges
        appear in the neighbour list). A jump J in E between x = −δ and +δ would make the third
        difference E(3δ) − 3E(δ) + 3E(−δ) − E(−3δ) equal −2J (+ O(δ³)); it is < 1e-10 eV (forces:
        < 1e-8 eV/Å). 1e-5 Å inside, dropping the pair's edges changes E by < 1e-9 eV and F by
        < 1e-8 eV/Å: the envelope and its first two derivatives vanish at the cutoff, so the pair
        adds O(ε³) to E and O(ε²) to F (measured ~1e-10 eV/Å for eSEN at ε = 1e-5, 1e-8 at
        ε = 1e-4; a merely continuous envelope would leave O(ε) ≈ 1e-5). 0.5 Å inside, dropping it
        changes E by > 1e-6 eV, so the checks are not vacuous."""
        model = self.build(case)
        c = model.cutoff
        base = molecule("CH3OH")
        base.rattle(0.02, seed=4)
        carbon = base.positions[0]
        probe = len(base)

        def batch_at(dx):
            return batch_from_atoms([base + Atoms("H", positions=[carbon + [0.0, 0.0, c + dx]])], c)

        delta = 1e-5
        b = {k: batch_at(k * delta) for k in (-3, -1, 1, 3)}
        assert b[-1]["n_edges"] == b[1]["n_edges"] + 2 and b[-3]["n_edges"] == b[-1]["n_edges"]
        out = {k: model(v) for k, v in b.items()}
        third = {key: float((out[3][key] - 3 * out[1][key] + 3 * out[-1][key] - out[-3][key]).abs().max())
                 for key in ("energy", "forces")}
        assert third["energy"] < 1e-10 and third["forces"] < 1e-8, third
        inside = batch_at(-1e-5)
        with_pair, without = model(inside), model(drop_pair(inside, 0, probe))
        assert float((with_pair["energy"] - without["energy"]).abs().max()) < 1e-9
        assert float((with_pair["forces"] - without["forces"]).abs().max()) < 1e-8
        deep = batch_at(-0.5)
        assert float((model(deep)["energy"] - model(drop_pair(deep, 0, probe))["energy"]).abs().max()) > 1e-6

    # ------------------------------------------------------------------ size and training
    def test_parameter_count_as_the_ledger_records_it(self, case):
        """``count_parameters()`` (the ledger's ``n_params``/``n_params_total``): trainable parameters,
        N without the element table [max_atomic_number + 1, width]; frozen ones do not count."""
        model = self.build(case)
        counts = model.count_parameters()
        params = dict(model.named_parameters())
        table = {n: p for n, p in params.items() if n.startswith(model.embedding_prefixes)}
        assert [p.shape for p in table.values()] == [(model.max_atomic_number + 1, model.width)]
        total = sum(p.numel() for p in params.values())
        assert counts == {"n_params": total - model.width * (model.max_atomic_number + 1), "n_params_total": total}
        name, frozen = next((n, p) for n, p in params.items() if n not in table)
        frozen.requires_grad_(False)
        after = model.count_parameters()
        assert (counts["n_params"] - after["n_params"], counts["n_params_total"] - after["n_params_total"]) == (
            frozen.numel(), frozen.numel()), name

    def test_every_parameter_gets_a_gradient(self, case):
        """The training loss (``EnergyForceLoss``, random labels) reaches every trainable parameter."""
        model = self.build(case)
        training_loss(model, labelled(batch_from_atoms(self.systems(), model.cutoff))).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not float(p.grad.abs().sum()) > 0]
        assert missing == []

    @torch.no_grad()  # evaluation: forces without a graph
    def test_init_config_round_trip(self, case):
        """``init_config()`` names every constructor argument (an omission would silently drop it from
        checkpoints and μP rebuilds), is JSON-clean, and the class registered under the model's
        class path rebuilt from it takes the state_dict (strict) and gives identical outputs."""
        from nnip_scale.models import registered_model
        from nnip_scale.models.registry import class_path

        model = self.build(case)
        cfg = model.init_config()
        assert set(cfg) == set(inspect.signature(type(model)).parameters)
        assert json.loads(json.dumps(cfg)) == cfg
        cls = registered_model(class_path(type(model)))
        assert cls is type(model)
        rebuilt = cls(**cfg).double()
        rebuilt.load_state_dict(model.state_dict())
        assert rebuilt.init_config() == cfg
        batch = batch_from_atoms(self.systems(), model.cutoff)
        ref, out = model(batch), rebuilt(batch)
        assert ref.keys() == out.keys() and all(torch.equal(ref[k], out[k]) for k in ref)
        cfg.clear()  # a copy: the caller cannot change what the model records
        assert model.init_config() == rebuilt.init_config()

    def test_direct_forces_reject_stress(self):
        with pytest.raises(ValueError, match="compute_stress=True needs forces='conservative'"):
            self.make_model(forces="direct", compute_stress=True)

    # ------------------------------------------------------------------ backends
    def test_backend_parity(self, case, backend):
        """A model on ``backend`` has the torch model's state_dict layout and, loaded with its
        weights, gives its energy, forces, stress and parameter gradients (fp64, 1e-10 relative),
        on the systems and a transformed copy of them in one batch (``auto`` is compared with the
        torch reference in the FLOP test)."""
        ref, other = self.build(case), self.build(case, backend=backend)
        assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in other.state_dict().items()}
        other.load_state_dict(ref.state_dict())
        Q = (group_elements(self.symmetry) or [np.eye(3)])[-1]
        atoms = self.systems() + [transformed(a, Q, np.array([0.3, 0.2, -0.1])) for a in self.systems()]
        batch = labelled(batch_from_atoms(atoms, ref.cutoff))
        results = []
        for model in (ref, other):
            out = model(batch)
            training_loss(model, batch).backward()
            results.append((out, {n: p.grad for n, p in model.named_parameters()}))
        (o1, g1), (o2, g2) = results
        for key in o1:
            assert_rel_close(o2[key], o1[key], what=key)
        for name in g1:
            assert_rel_close(g2[name], g1[name], what=name)

    # ------------------------------------------------------------------ FLOPs
    def test_flops_as_the_ledger_counts_them(self, mode_case):
        """The ledger counts FLOPs with ``count_flops`` on a ``reference_copy`` (every op on torch,
        same outputs as the ``auto`` model) and bills each batch by a cost model fitted on
        sub-batches: so a training step's count must be additive over the batch's structures
        (exact integers) and affine in edges, atoms and structures where ``flops_affine`` (fit
        residual < 1e-9), and cost ``train_flops_per_forward`` forwards."""
        from nnip_scale.training.flops import StepCostModel, batch_features, count_flops, reference_copy

        model = self.build(mode_case, backend="auto")
        twin = reference_copy(model)
        backends = {m.backend for m in twin.modules() if isinstance(getattr(m, "backend", None), str)}
        assert backends == {"torch"}
        mols = [molecule("H2O"), molecule("CH4"), *standard_systems()]
        mols[0].rattle(0.03, seed=5)
        mols[1].rattle(0.03, seed=6)
        batches = {k: labelled(batch_from_atoms([mols[i] for i in k], model.cutoff))
                   for k in [(0,), (1,), (2,), (0, 1), (0, 2), (2, 3)]}
        ref = model(batches[(2, 3)])
        for key, value in twin(batches[(2, 3)]).items():
            assert_rel_close(value, ref[key], what=key)

        def forward(b):
            with torch.no_grad():
                twin(b)

        def train(b):
            training_loss(twin, b).backward()

        fwd = count_flops(lambda: forward(batches[(2, 3)]))
        f = {k: count_flops(lambda b=b: train(b)) for k, b in batches.items()}
        lo, hi = self.train_flops_per_forward
        assert fwd > 0 and lo <= f[(2, 3)] / fwd <= hi, (f[(2, 3)], fwd, f[(2, 3)] / fwd)
        assert f[(0, 1)] + f[(2,)] == f[(0, 2)] + f[(1,)], f  # additive over structures
        if self.flops_affine:  # 6 batches, 4 coefficients (edges, atoms, structures, 1)
            cost = StepCostModel().fit(np.stack([batch_features(b) for b in batches.values()]),
                                       np.array(list(f.values())))
            assert cost.max_rel_residual < 1e-9, cost.max_rel_residual
