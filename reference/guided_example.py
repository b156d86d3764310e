"""The reference's classifier-guidance example, as the reference wrote it.

``guided_diffusion.py`` defines its example ``Classifier`` and ``classifier_cond_fn`` under
``if __name__ == '__main__':``, so they cannot be imported.  ``example()`` reads that block's
class and function definitions from the installed file (the code itself, not a copy) and
executes only those two definitions in the module's namespace."""

import ast
import inspect


def example():
    """``(Classifier, classifier_cond_fn)`` of the installed reference's ``guided_diffusion``."""
    from reference.builders import check_reference_version
    check_reference_version()
    import denoising_diffusion_pytorch.guided_diffusion as gd
    tree = ast.parse(inspect.getsource(gd))
    main = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "__name__ == '__main__'"]
    if len(main) != 1:
        raise RuntimeError("guided_diffusion.py: no single `if __name__ == '__main__':` block")
    wanted = {'Classifier', 'classifier_cond_fn'}
    defs = [n for n in main[0].body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in wanted]
    if {n.name for n in defs} != wanted:
        raise RuntimeError(f'guided_diffusion.py example: expected {sorted(wanted)}')
    namespace = dict(vars(gd))
    exec(compile(ast.Module(body=defs, type_ignores=[]), gd.__file__, 'exec'), namespace)
    return namespace['Classifier'], namespace['classifier_cond_fn']
