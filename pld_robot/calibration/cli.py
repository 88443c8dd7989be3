"""`pld-robot calibrate board | collect | intrinsics | hand-eye`."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from pld_robot.calibration import CalibrationError
from pld_robot.calibration.board import BoardDetector, load_board
from pld_robot.calibration.camera_info import load_camera_yaml, save_camera_yaml
from pld_robot.calibration.hand_eye import load_hand_eye, save_hand_eye, solve_hand_eye
from pld_robot.calibration.intrinsics import (
    MIN_CORNERS,
    board_pose,
    calibrate_intrinsics,
)
from pld_robot.calibration.views import load_views
from pld_robot.config import ConfigError, load_yaml
from pld_robot.paths import shipped_config
from pld_robot.robots.transforms import matrix_to_rotvec, quat_to_matrix

DEFAULT_BOARD = "boards/charuco_5x7_40mm.yaml"


def add_parser(sub) -> None:
    parser = sub.add_parser("calibrate", help="camera intrinsics and hand-eye calibration with a ChArUco board")
    calibrate = parser.add_subparsers(dest="calibrate_command", required=True)

    board = calibrate.add_parser("board", help="render the board as a PNG to print at 100 %% scale")
    _board_option(board)
    board.add_argument("--out", required=True, help="PNG file")
    board.add_argument("--dpi", type=int, default=300)
    board.set_defaults(func=_print_board)

    collect = calibrate.add_parser(
        "collect", help="capture views (image + arm pose) into a folder: from ROS topics, or rendered in the sim lab")
    collect.add_argument("--camera", required=True, help="camera name (topics /camera/<name>/color/image_raw)")
    collect.add_argument("--out", required=True, help="new folder for the views")
    collect.add_argument("--views", type=int, default=15, help="number of views (default 15; at least 6)")
    collect.add_argument("--sim", action="store_true",
                         help="render the views in the sim lab's scene (with a board added) instead of reading ROS")
    collect.add_argument("--config", help="with --sim: graph YAML for the lab's cameras (default config/sim.yaml)")
    collect.add_argument("--size", default="640x480", help="with --sim: render size WxH (default 640x480)")
    collect.add_argument("--seed", type=int, default=0, help="with --sim: seed of the arm poses")
    _board_option(collect)
    collect.set_defaults(func=_collect)

    intrinsics = calibrate.add_parser("intrinsics", help="camera matrix and distortion from a folder of views")
    intrinsics.add_argument("views", help="folder of views (calibrate collect) or of board images")
    intrinsics.add_argument("--out", required=True, help="YAML to write (camera_calibration_parsers layout)")
    intrinsics.add_argument("--camera", help="camera name in the file (default: the views' camera)")
    intrinsics.add_argument("--min-views", type=int, default=6, help="fewest usable views (default 6)")
    intrinsics.add_argument("--fit-k3", action="store_true", help="also fit the k3 radial term")
    _board_option(intrinsics)
    intrinsics.set_defaults(func=_intrinsics)

    hand_eye = calibrate.add_parser("hand-eye", help="the camera's pose relative to the arm from a folder of views")
    hand_eye.add_argument("views", help="folder of views with arm poses (calibrate collect)")
    hand_eye.add_argument("--intrinsics", required=True, help="the camera's intrinsics YAML (calibrate intrinsics)")
    hand_eye.add_argument("--mode", choices=["eye-in-hand", "eye-to-hand"],
                          help="eye-in-hand: camera on the hand, board fixed; eye-to-hand: camera fixed, board "
                               "held by the hand (default: the views' mode, if recorded)")
    hand_eye.add_argument("--out", required=True, help="YAML to write")
    _board_option(hand_eye)
    hand_eye.set_defaults(func=_hand_eye)


def _board_option(parser) -> None:
    parser.add_argument("--board", help=f"board definition YAML (default calibration/{DEFAULT_BOARD})")


def _board(args):
    return load_board(args.board or shipped_config(DEFAULT_BOARD, folder="calibration"))


def _print_board(args) -> int:
    board = _board(args)
    px = round(board.square_length_m / 0.0254 * args.dpi)
    image = board.render(px)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(args.out, image):
        raise ConfigError(f"cannot write {args.out} (an image file name OpenCV knows: .png, .jpg, ...)")
    w, h = board.size_m
    print(f"{args.out}: {image.shape[1]}x{image.shape[0]} px at {args.dpi} dpi = {w * 1e3:.0f} x {h * 1e3:.0f} mm; "
          "print at 100 % (no fit-to-page), then measure a square and correct square_length_m")
    return 0


def _collect(args) -> int:
    board = _board(args)
    if args.sim:
        os.environ.setdefault("MUJOCO_GL", "osmesa")
        from pld_robot.calibration.sim_views import collect_sim_views
        from pld_robot.config import from_dict, load_node_params
        from pld_robot.sim.lab import SimLabConfig

        config = args.config or shipped_config("sim.yaml")
        lab = from_dict(SimLabConfig, load_node_params(config, "sim_node").get("lab", {}), where=f"{config}: sim_node.lab")
        try:
            width, height = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size must be WIDTHxHEIGHT, e.g. 640x480, not {args.size!r}") from None
        truth = collect_sim_views(args.out, args.camera, lab, board, views=args.views, width=width, height=height,
                                  seed=args.seed)
        print(f"{args.out}: {args.views} {truth.mode.replace('_', '-')} view(s) of sim camera '{args.camera}' "
              f"at {width}x{height}; the scene's true camera is in {args.out}/truth.yaml")
        return 0
    from pld_robot.nodes.calibration_capture import capture_views

    count = capture_views(args.camera, args.out, args.views, BoardDetector(board))
    print(f"{args.out}: {count} view(s) of camera '{args.camera}'")
    return 0


def _intrinsics(args) -> int:
    found = load_views(args.views)
    views = found.views
    camera = args.camera or found.camera or Path(args.out).stem
    result = calibrate_intrinsics({v.name: v.image for v in views}, BoardDetector(_board(args)),
                                  min_views=args.min_views, fit_k3=args.fit_k3)
    i = result.intrinsics
    worst = max(result.view_errors_px, key=result.view_errors_px.get)
    save_camera_yaml(args.out, i, camera, comment=(
        f"camera '{camera}': pld-robot calibrate intrinsics {args.views}\n"
        f"RMS reprojection error {result.rms_px:.3f} px over {len(result.view_errors_px)} views"))
    print(f"{args.out}: fx {i.fx:.2f} fy {i.fy:.2f} cx {i.cx:.2f} cy {i.cy:.2f} px, distortion "
          f"{' '.join(f'{d:+.4f}' for d in i.distortion)}")
    print(f"RMS reprojection error {result.rms_px:.3f} px over {len(result.view_errors_px)} of {len(views)} views "
          f"(worst {worst}: {result.view_errors_px[worst]:.3f} px)")
    for name, why in result.skipped.items():
        print(f"not used: {name}: {why}")
    _compare_intrinsics(Path(args.views), i)
    return 0


def _hand_eye(args) -> int:
    found = load_views(args.views)
    views = found.views
    _, intrinsics = load_camera_yaml(args.intrinsics)
    mode = (args.mode or found.mode).replace("-", "_")
    if not mode:
        raise ConfigError("--mode eye-in-hand or eye-to-hand is required (the views do not record it)")
    without_pose = [v.name for v in views if v.tcp_pose is None]
    if without_pose:
        raise CalibrationError(f"{args.views}: {len(without_pose)} view(s) have no arm pose, e.g. {without_pose[:3]}; "
                               "hand-eye needs views from `pld-robot calibrate collect`")
    if any(v.image.shape[:2] != (intrinsics.height, intrinsics.width) for v in views):
        raise CalibrationError(f"{args.intrinsics} is for {intrinsics.width}x{intrinsics.height} images; "
                               f"the views in {args.views} are {views[0].image.shape[1]}x{views[0].image.shape[0]}")
    detector = BoardDetector(_board(args))
    arm, boards, missing = [], [], []
    for view in views:
        detection = detector.detect(view.image)
        if detection is None or len(detection.ids) < MIN_CORNERS:
            missing.append(view.name)
            continue
        pose, _ = board_pose(detection, intrinsics)
        arm.append(view.tcp_pose)
        boards.append(pose)
    if missing:
        print(f"board not detected in {len(missing)} view(s), left out: {', '.join(missing)}")
    result = solve_hand_eye(arm, boards, mode)
    camera = found.camera or Path(args.out).stem
    save_hand_eye(args.out, result, camera)
    t = result.transform
    print(f"{args.out}: {result.parent_frame} <- {camera} optical frame: translation "
          f"{' '.join(f'{v:+.4f}' for v in t[:3, 3])} m, rotation vector "
          f"{' '.join(f'{v:+.4f}' for v in matrix_to_rotvec(t[:3, :3]))} rad, from {result.views} views")
    print(f"consistency: the fixed board's pose varies by {result.spread_mm:.2f} mm / {result.spread_deg:.3f} deg "
          "across views (a few mm and under 0.5 deg is good)")
    _compare_hand_eye(Path(args.views), load_hand_eye(args.out)[1].transform)
    return 0


def _truth(folder: Path) -> dict | None:
    return load_yaml(folder / "truth.yaml") if (folder / "truth.yaml").is_file() else None


def _compare_intrinsics(folder: Path, found) -> None:
    truth = _truth(folder)
    if truth is None:
        return
    t = truth["intrinsics"]
    errors = ", ".join(f"{k} {getattr(found, k) - t[k]:+.2f} px ({100 * (getattr(found, k) - t[k]) / t[k]:+.2f} %)"
                       for k in ("fx", "fy", "cx", "cy"))
    print(f"against the sim's true camera: {errors}")


def _compare_hand_eye(folder: Path, found: np.ndarray) -> None:
    truth = _truth(folder)
    if truth is None:
        return
    rotation = quat_to_matrix(truth["quaternion_xyzw"])
    angle = np.degrees(np.linalg.norm(matrix_to_rotvec(rotation.T @ found[:3, :3])))
    offset = 1e3 * np.linalg.norm(found[:3, 3] - np.asarray(truth["translation"]))
    print(f"against the sim's true camera pose: rotation error {angle:.3f} deg, translation error {offset:.2f} mm")
