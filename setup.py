"""ament_python package definition for rt_safe_rl (also pip-installable: `pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'rt_safe_rl'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE: ['models/*.pt', 'models/*.json', 'description/*.urdf', 'dashboards/*.json']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml')),
        (f'share/{PACKAGE}/config/policies', glob('config/policies/*.yaml')),
        (f'share/{PACKAGE}/config/profiles', glob('config/profiles/*.yaml')),
        (f'share/{PACKAGE}/models', glob(f'{PACKAGE}/models/*.pt') + glob(f'{PACKAGE}/models/*.json')),
        (f'share/{PACKAGE}/description', glob(f'{PACKAGE}/description/*.urdf')),
        (f'share/{PACKAGE}/dashboards', glob(f'{PACKAGE}/dashboards/*.json')),
    ],
    install_requires=['setuptools'],
    extras_require={'fleet': ['ray==2.60.0']},  # rt-safe-rl fleet replay (requirements-fleet.txt)
    zip_safe=False,
    maintainer='rt_safe_rl maintainers',
    maintainer_email='maintainers@rt-safe-rl.invalid',
    description='Real-time learned-policy inference and a fail-closed safety filter for ROS 2.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'rt-safe-rl = rt_safe_rl.cli:main',
            'bringup = rt_safe_rl.bringup:main',
            'policy_node = rt_safe_rl.nodes.policy_node:main',
            'safety_node = rt_safe_rl.nodes.safety_node:main',
            'sim_robot = rt_safe_rl.nodes.sim_robot_node:main',
            'sim_human = rt_safe_rl.nodes.sim_human_node:main',
            'sim_operator = rt_safe_rl.nodes.sim_operator_node:main',
            'monitor_node = rt_safe_rl.nodes.monitor_node:main',
            'benchmark_node = rt_safe_rl.nodes.benchmark_node:main',
        ],
    },
)
