"""Parity cases of the other diffusion processes (issue 13), as rows of
:class:`parity.cases.Case`, keyed by (reference module, class):

  learned_gaussian_diffusion.LearnedGaussianDiffusion
  weighted_objective_gaussian_diffusion.WeightedObjectiveGaussianDiffusion
  continuous_time_gaussian_diffusion.ContinuousTimeGaussianDiffusion
  v_param_continuous_time_gaussian_diffusion.VParamContinuousTimeGaussianDiffusion
  elucidated_diffusion.ElucidatedDiffusion
  xm.XMWrapper   (``call['flow']`` = (module, class, kwargs) of the process it wraps)

The rows live in their own table, ``ROWS_PROCESSES`` (``rows_processes(check)``), run by
``parity_tests/test_processes.py``: these processes take other arguments and draws than
``GaussianDiffusion`` (continuous times, sigmas, a second model output), so the 2D suite's
generic tests do not apply to them.

checks:
  loss       ``forward`` with every draw supplied (GRAPH: the loss compiled alone, where the
             process has no GRAPH grad row) (``draws['times']``: the times / sigmas;
             ``draws['coin']``: the self-conditioning coin); ``call``: 'reduction',
             'clip_denoised', XMWrapper's 'candidates' / 'max_batch_size'
  grad       loss and the gradient of every trainable parameter (the learned noise
             schedule's too), one compiled value_and_grad in GRAPH mode
  sample     the full sampling loop with every randn shared (kind 'sample', pixels in
             [0, 1]); PyNative: ``jit_sampling = False``, GRAPH: the compiled steps.
             ``call['sampler']``: 'dpmpp' for ``ElucidatedDiffusion.sample_using_dpmpp``;
             ``call['patch']``: the upstream bug patched in the reference for the test
  schedule   ElucidatedDiffusion's sigma schedule and churn gammas (host NumPy, no MindSpore program)
  precond    ElucidatedDiffusion.preconditioned_network_forward (c_skip, c_out, c_in, c_noise)

Keep it small: dim 8, dim_mults (1, 2), 8x8 images, batch 2, 2-4 sampling steps (PyNative
sampling runs the U-Net op by op: ~1 s a network evaluation on 2 busy cores), one
compiled loss+gradient and one compiled sampling loop per process.
"""

from parity.cases import B, Case, Table

DDP = 'denoising_diffusion_pytorch'
LGD = 'learned_gaussian_diffusion'
WOG = 'weighted_objective_gaussian_diffusion'
CTG = 'continuous_time_gaussian_diffusion'
VPC = 'v_param_continuous_time_gaussian_diffusion'
EDM = 'elucidated_diffusion'
XM = 'xm'

PY = ('pynative',)
BOTH = ('pynative', 'graph')

SIZE = 8
IMG = (B, 3, SIZE, SIZE)

SMALL = dict(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
LV = dict(SMALL, learned_variance=True)              # LearnedGaussianDiffusion: 2 x channels out
WO = dict(SMALL, out_dim=8)                          # WeightedObjective: 2 x channels + 2 out
LS = dict(SMALL, learned_sinusoidal_cond=True)       # continuous times / sigmas
LS_SC = dict(LS, self_condition=True)

CLASS = {DDP: 'GaussianDiffusion', LGD: 'LearnedGaussianDiffusion', WOG: 'WeightedObjectiveGaussianDiffusion',
         CTG: 'ContinuousTimeGaussianDiffusion', VPC: 'VParamContinuousTimeGaussianDiffusion',
         EDM: 'ElucidatedDiffusion', XM: 'XMWrapper'}
NET = {DDP: SMALL, LGD: LV, WOG: WO, CTG: LS, VPC: LS, EDM: LS}

# loss times: integer (with a t = 0, LearnedGaussianDiffusion's decoder-NLL branch), continuous, sigmas
T_INT = (0, 37)
T_CONT = (0.13, 0.91)
SIGMAS = (0.07, 3.1)

ROWS_PROCESSES = Table()
add = ROWS_PROCESSES.add


def rows_processes(check=None, module=None):
    return ROWS_PROCESSES.rows(check, module=module)


def _row(id, module, check, kind, kwargs, net=None, modes=PY, **kw):
    net = NET.get(module) if net is None else net
    return Case(f'{module}/{id}', module, CLASS[module], check, kind, kwargs=kwargs,
                net_module=DDP if net is not None else None, net_cls='Unet' if net is not None else None,
                net_kwargs=net, modes=modes, **kw)


def _xm(id, check, kind, flow, xm_kwargs, modes=PY, **kw):
    """XMWrapper around ``flow`` = (module, kwargs of the process); its network is NET[module]
    (or kwargs['net'])."""
    module, flow_kwargs = flow
    call = dict(kw.pop('call', {}), flow=(module, flow_kwargs))
    return Case(f'{XM}/{id}', XM, 'XMWrapper', check, kind, kwargs=xm_kwargs, modes=modes, call=call, **kw)


GD8 = dict(image_size=SIZE, timesteps=50)

# --- learned_gaussian_diffusion -------------------------------------------------------------

add(
    _row('pred_noise-linear', LGD, 'loss', 'loss', dict(image_size=SIZE, timesteps=50, objective='pred_noise', beta_schedule='linear'),
         draws={'times': T_INT}),
    _row('default-objective-none', LGD, 'loss', 'loss', dict(image_size=SIZE, timesteps=50), draws={'times': T_INT},
         call={'reduction': 'none'}),
    _row('clip_denoised-vb0.01', LGD, 'loss', 'loss', dict(image_size=SIZE, timesteps=50, vb_loss_weight=0.01, beta_schedule='cosine'),
         draws={'times': (0, 49)}, call={'clip_denoised': True, 'reduction': 'none'}),
    _row('pred_x0-sigmoid', LGD, 'loss', 'loss', dict(image_size=SIZE, timesteps=50, objective='pred_x0'), draws={'times': (3, 0)}),
    _row('pred_noise', LGD, 'grad', 'grad', dict(image_size=SIZE, timesteps=50, objective='pred_noise'),
         draws={'times': (5, 37)}, modes=BOTH),
    # t = 0: the decoder NLL's gradient is ill-conditioned in float32 (see tolerance grad_decoder_nll)
    _row('pred_noise-t0-decoder_nll', LGD, 'grad', 'grad_decoder_nll', dict(image_size=SIZE, timesteps=50, objective='pred_noise'),
         draws={'times': T_INT}),
    _row('ddpm-T4', LGD, 'sample', 'sample', dict(image_size=SIZE, timesteps=4, objective='pred_noise'), modes=BOTH),
    # upstream: NameError partial (and identity) on the DDIM path; patched in the reference for the test
    _row('ddim-T20-S3-pred_noise', LGD, 'sample', 'sample', dict(image_size=SIZE, timesteps=20, sampling_timesteps=3,
         objective='pred_noise', ddim_sampling_eta=0.5), modes=BOTH, call={'patch': 'learned_partial'}),
    _row('ddim-T20-S2-pred_x0', LGD, 'sample', 'sample', dict(image_size=SIZE, timesteps=20, sampling_timesteps=2,
         objective='pred_x0'), call={'patch': 'learned_partial'}),
)

# --- weighted_objective_gaussian_diffusion --------------------------------------------------

add(
    _row('default', WOG, 'loss', 'loss', GD8, draws={'times': T_INT}, modes=BOTH),
    _row('weights-clip-none', WOG, 'loss', 'loss', dict(GD8, pred_noise_loss_weight=0.3, pred_x_start_loss_weight=0.7, beta_schedule='linear'),
         draws={'times': (49, 11)}, call={'reduction': 'none', 'clip_denoised': True}),
    _row('default', WOG, 'grad', 'grad', GD8, draws={'times': T_INT}),
    # upstream: sample() raises TypeError (p_mean_variance takes no x_self_cond, returns 3 values); patched in the reference
    _row('ddpm-T4', WOG, 'sample', 'sample', dict(image_size=SIZE, timesteps=4), modes=BOTH, call={'patch': 'weighted_p_mean_variance'}),
)

# --- continuous_time_gaussian_diffusion -----------------------------------------------------

CT = dict(image_size=SIZE, num_sample_steps=4)
LEARNED = dict(CT, noise_schedule='learned', learned_schedule_net_hidden_dim=16)
# per-parameter tolerance kinds (longest matching name prefix wins; the rest: the row's kind)
LEARNED_SCHEDULE_GRAD_KINDS = {'log_snr.': 'grad_learned_schedule', 'log_snr.net.2.fn.2.net.bias': 'grad_invariant'}

add(
    _row('linear', CTG, 'loss', 'loss', CT, draws={'times': T_CONT}),
    _row('linear-t0-t1-none', CTG, 'loss', 'loss', CT, draws={'times': (0.0, 1.0)}, call={'reduction': 'none'}),
    _row('cosine-min_snr', CTG, 'loss', 'loss', dict(CT, noise_schedule='cosine', min_snr_loss_weight=True), draws={'times': T_CONT}),
    _row('linear-min_snr_gamma2-none', CTG, 'loss', 'loss', dict(CT, min_snr_loss_weight=True, min_snr_gamma=2),
         draws={'times': (0.05, 0.6)}, call={'reduction': 'none'}),
    _row('learned', CTG, 'loss', 'loss', LEARNED, draws={'times': T_CONT}),
    _row('learned-frac0.3-min_snr', CTG, 'grad', 'grad', dict(LEARNED, learned_noise_schedule_frac_gradient=0.3, min_snr_loss_weight=True),
         draws={'times': T_CONT}, modes=BOTH, call={'grad_kinds': LEARNED_SCHEDULE_GRAD_KINDS}),
    _row('cosine', CTG, 'grad', 'grad', dict(CT, noise_schedule='cosine'), draws={'times': T_CONT}),
    _row('linear-N3', CTG, 'sample', 'sample', dict(CT, num_sample_steps=3), modes=BOTH),
    _row('cosine-no_clip-N2', CTG, 'sample', 'sample', dict(CT, noise_schedule='cosine', clip_sample_denoised=False, num_sample_steps=2)),
    _row('learned-N2', CTG, 'sample', 'sample', dict(LEARNED, num_sample_steps=2)),
)

# --- v_param_continuous_time_gaussian_diffusion ---------------------------------------------

add(
    _row('default', VPC, 'loss', 'loss', CT, draws={'times': T_CONT}, modes=BOTH),
    _row('none', VPC, 'loss', 'loss', CT, draws={'times': (0.0, 0.5)}, call={'reduction': 'none'}),
    _row('default', VPC, 'grad', 'grad', CT, draws={'times': T_CONT}),
    _row('N3', VPC, 'sample', 'sample', dict(CT, num_sample_steps=3), modes=BOTH),
    _row('no_clip-N2', VPC, 'sample', 'sample', dict(CT, clip_sample_denoised=False, num_sample_steps=2)),
)

# --- elucidated_diffusion -------------------------------------------------------------------

ED = dict(image_size=SIZE, num_sample_steps=4)

add(
    _row('default', EDM, 'loss', 'loss', ED, draws={'times': SIGMAS}),
    _row('sigma_data-none', EDM, 'loss', 'loss', dict(ED, sigma_data=0.7), draws={'times': (0.002, 80.)}, call={'reduction': 'none'}),
    _row('self_cond-coin-used', EDM, 'loss', 'loss', ED, net=LS_SC, draws={'times': SIGMAS, 'coin': 0.3}),
    _row('self_cond-coin-unused', EDM, 'loss', 'loss', ED, net=LS_SC, draws={'times': SIGMAS, 'coin': 0.7}, call={'reduction': 'none'}),
    _row('self_cond-coin-used', EDM, 'grad', 'grad', ED, net=LS_SC, draws={'times': SIGMAS, 'coin': 0.3}, modes=BOTH),
    _row('default', EDM, 'grad', 'grad', ED, draws={'times': SIGMAS}),
    # N = 3: sigmas 80, ~2.5, 0.002, 0 -> churn (gamma > 0) on ~2.5 (inside [S_tmin, S_tmax]),
    # two Heun corrections, the last step Euler
    _row('N3', EDM, 'sample', 'sample', dict(ED, num_sample_steps=3), modes=BOTH),
    # N = 2 with S_tmax = 100: churn on sigma 80 (gamma = min(S_churn / N, sqrt(2) - 1) = 0.41)
    _row('self_cond-N2-churn', EDM, 'sample', 'sample', dict(ED, num_sample_steps=2, S_churn=1.0, S_tmax=100, S_noise=1.01), net=LS_SC),
    _row('no_clamp-N2', EDM, 'sample', 'sample', dict(ED, num_sample_steps=2), call={'clamp': False}),
    _row('dpmpp-N3', EDM, 'sample', 'sample', dict(ED, num_sample_steps=3), modes=BOTH, call={'sampler': 'dpmpp'}),
    # sigmas: kind elementwise (torch's float32 ** rho is Sleef powf, within 1 ulp; ms_ddpm rounds the
    # float64 pow once: measured 1-ulp differences in a few of 33 / 251 sigmas); the gammas: exact
    _row('defaults', EDM, 'schedule', 'elementwise', dict(image_size=SIZE), modes=()),
    _row('N7-rho5-tmin-tmax', EDM, 'schedule', 'elementwise', dict(image_size=SIZE, num_sample_steps=7, rho=5, sigma_min=0.01, sigma_max=20,
                                                                S_tmin=0.1, S_tmax=10, S_churn=3), modes=()),
    _row('N250', EDM, 'schedule', 'elementwise', dict(image_size=SIZE, num_sample_steps=250), modes=()),
    _row('default', EDM, 'precond', 'unet', ED, draws={'times': SIGMAS}, modes=BOTH),
)

# --- xm --------------------------------------------------------------------------------------

add(
    _xm('gd-candidates3-max4', 'loss', 'loss', (DDP, GD8), dict(candidates=3, max_batch_size=4), draws={'times': T_INT}),
    _xm('gd-candidates1', 'loss', 'loss', (DDP, GD8), dict(candidates=1), draws={'times': T_INT}),
    _xm('gd-call-candidates2', 'loss', 'loss', (DDP, GD8), dict(candidates=4), draws={'times': T_INT},
        call={'candidates': 2, 'max_batch_size': 3}),
    _xm('edm-sigma-candidates2', 'loss', 'loss', (EDM, ED), dict(candidates=2, random_time_method='noise_distribution',
        random_time_kwarg='sigma'), draws={'times': SIGMAS}),
    _xm('ct-candidates2', 'loss', 'loss', (CTG, CT), dict(candidates=2), draws={'times': T_CONT}),
    _xm('gd-candidates2', 'grad', 'grad', (DDP, GD8), dict(candidates=2), draws={'times': T_INT}, modes=BOTH),
    _xm('ct-sample', 'sample', 'sample', (CTG, dict(CT, num_sample_steps=2)), dict(candidates=2)),
)
