"""MindSpore twin of ``denoising_diffusion_pytorch/xm.py`` (2.3.4).

Explorative modeling (forward xm): each sample is repeated ``candidates`` times, the flow
model's per-sample losses are computed (in chunks of at most ``max_batch_size``), and the
loss is the mean over samples of the minimum over their candidates.

Randomness: the random time (``random_time_method`` / ``random_time_kwarg``) and the flow
model's ``xm_shared_random_kwargs`` are drawn once per sample, before the candidates are
expanded, exactly as in the reference.  To supply the draws the flow model makes inside each
chunk (``noise=`` for ``GaussianDiffusion``), pass them with the expanded batch size
``batch * candidates`` (candidate-major within a sample: rows ``b * candidates + k``): a
tensor whose first dimension is the expanded size is not repeated, only sliced per chunk,
as in the reference.
"""

from inspect import signature

from mindspore import ops

from ms_ddpm.ms_compat import Module, name_parameters_by_path, cat, is_tensor, tree_map, tree_flatten, repeat_batch, positional_parameters, call_positional

# explorative modeling (forward xm)
# Alexi Gladstone et al. https://arxiv.org/abs/2607.27372

# helpers

def exists(v):
    return v is not None

def default(v, d):
    return v if exists(v) else d

def is_batch_tensor(t, b):
    if not is_tensor(t) or t.ndim == 0:
        return False

    batch = t.shape[0]
    return batch == b

# tree_map's functions (the reference's lambdas; GRAPH mode compiles functions with arguments)

def _repeat_if_batch(t, batch, candidates):
    return repeat_batch(t, candidates) if is_batch_tensor(t, batch) else t

def _slice_if_batch(t, total, start, end):
    return t[start:end] if is_batch_tensor(t, total) else t

def _copy_dict(d):
    out = {}
    for k in d:
        out[k] = d[k]
    return out

# xm wrapper

class XMWrapper(Module):
    def __init__(
        self,
        flow_model: Module,
        candidates = 1,
        max_batch_size = None,
        random_time_method = 'random_times',
        random_time_kwarg = 'times'
    ):
        super().__init__()
        self.flow_model = flow_model

        assert candidates >= 1, 'candidates must be at least 1'
        self.candidates = candidates
        self.max_batch_size = max_batch_size
        # a MindSpore cell's forward is its construct
        self.has_loss_reduction = 'loss_reduction' in signature(flow_model.construct).parameters
        self._flow_params = positional_parameters(flow_model.construct)   # see ms_compat.call_positional

        self.random_time_method = random_time_method
        self.random_time_kwarg = random_time_kwarg

        # parameter names = the reference's state-dict keys (flow_model.<...>); load the flow
        # model's own weights before wrapping it, or the wrapper's after
        name_parameters_by_path(self)

    @property
    def data_shape(self):
        return getattr(self.flow_model, 'data_shape', None)

    @data_shape.setter
    def data_shape(self, val):
        if hasattr(self.flow_model, 'data_shape'):
            self.flow_model.data_shape = val

    def sample(self, *args, **kwargs):
        return self.flow_model.sample(*args, **kwargs)

    def construct(
        self,
        *args,
        candidates = None,
        max_batch_size = None,
        **kwargs
    ):
        candidates = default(candidates, self.candidates)
        max_batch_size = default(max_batch_size, self.max_batch_size)

        if candidates == 1:
            return self.flow_model(*args, **kwargs)

        kwargs = _copy_dict(kwargs)   # added to below (a fresh dict: GRAPH mode's **kwargs is read-only)

        # find batch size from first tensor in inputs

        batch = None
        for t in tree_flatten((args, kwargs)):
            if batch is None and is_tensor(t):
                batch = t.shape[0]

        # sample anything that must be shared before expanding candidates

        if hasattr(self.flow_model, 'xm_shared_random_kwargs'):
            random_kwargs = self.flow_model.xm_shared_random_kwargs(batch)

            for key, value in random_kwargs.items():
                if key not in kwargs:
                    kwargs[key] = value

        if self.random_time_kwarg not in kwargs:
            assert hasattr(self.flow_model, self.random_time_method), f'flow_model must have a {self.random_time_method} method'
            fn = getattr(self.flow_model, self.random_time_method)
            kwargs[self.random_time_kwarg] = fn(batch)

        # repeat inputs K candidates times

        args_K, kwargs_K = tree_map(_repeat_if_batch, (args, kwargs), batch, candidates)

        total = batch * candidates
        chunk_size = default(max_batch_size, total) if self.has_loss_reduction else 1
        # {'loss_reduction': 'none'} as (name, value) pairs (see ms_compat.call_positional)
        extra_kwargs = (('loss_reduction', 'none'),) if self.has_loss_reduction else ()

        # forward passes

        losses = ()

        for start in range(0, total, chunk_size):
            end = min(start + chunk_size, total)

            chunk_args, chunk_kwargs = tree_map(_slice_if_batch, (args_K, kwargs_K), total, start, end)
            # chunk_kwargs.update(extra_kwargs); self.flow_model(*chunk_args, **chunk_kwargs)
            loss = call_positional(self.flow_model, self._flow_params, chunk_args, chunk_kwargs, extra_kwargs)
            loss = loss.reshape(1, 1) if loss.ndim == 0 else loss.reshape(loss.shape[0], -1)
            losses = losses + (loss,)

        # select candidate with minimum loss for each sample in batch

        raw_loss = cat(losses, dim = 0)
        candidate_losses = raw_loss.reshape(batch, candidates, -1).mean(-1)   # reduce(raw_loss, '(b k) ... -> b k', 'mean')

        return ops.amin(candidate_losses, -1).mean()
