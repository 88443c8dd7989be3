"""Read a gamepad through SDL2's GameController API, in the ROS joy package's message layout.

`read()` returns (axes, buttons) exactly as the joy package's `game_controller_node` would publish
them with `deadzone:=0.0` (the teleop mapping applies its own deadzone), so one teleop mapping
works with either source:

    axes     SDL_CONTROLLER_AXIS_* order: 0 LEFTX, 1 LEFTY, 2 RIGHTX, 3 RIGHTY,
             4 TRIGGERLEFT, 5 TRIGGERRIGHT; raw value / -32767, i.e. sticks left = +1 and up = +1
             (ROS "left/forward positive"), triggers 0 released .. -1 fully pressed
    buttons  SDL_CONTROLLER_BUTTON_* order (21): 0 A, 1 B, 2 X, 3 Y, 4 BACK, 5 GUIDE, 6 START,
             7 LEFTSTICK, 8 RIGHTSTICK, 9 LEFTSHOULDER, 10 RIGHTSHOULDER, 11-14 DPAD up/down/left/
             right, 15 MISC1, 16-19 PADDLE1-4, 20 TOUCHPAD; 1 = pressed

SDL needs no display for this: only the joystick and game-controller subsystems are started.
"""

from __future__ import annotations

import sdl2

N_AXES = sdl2.SDL_CONTROLLER_AXIS_MAX
N_BUTTONS = sdl2.SDL_CONTROLLER_BUTTON_MAX
_SUBSYSTEMS = sdl2.SDL_INIT_GAMECONTROLLER | sdl2.SDL_INIT_JOYSTICK


class GamepadError(RuntimeError):
    """No usable game controller: none connected, the chosen one is missing, or SDL failed."""


class GamepadDisconnected(GamepadError):
    """The open game controller was unplugged."""


def axis_to_joy(raw: int) -> float:
    # As game_controller_node: -32768 is folded onto -32767 so the range is symmetric, and the sign
    # is flipped because SDL reports up and left as negative.
    return max(raw, -32767) / -32767.0


class SdlGamepad:
    """One opened game controller. `device`: an SDL device index, or a substring of its name."""

    def __init__(self, device: int | str = 0):
        _init()
        try:
            index = _find(device)
            self._controller = sdl2.SDL_GameControllerOpen(index)
            if not self._controller:
                raise GamepadError(f"cannot open game controller {index}: {_sdl_error()}")
        except BaseException:
            _quit()
            raise
        self.name = sdl2.SDL_GameControllerName(self._controller).decode(errors="replace")

    def read(self) -> tuple[list[float], list[int]]:
        if not self._controller:
            raise GamepadError(f"game controller '{self.name}' is closed")
        # Also runs SDL's device detection, so an unplug shows up here.
        sdl2.SDL_GameControllerUpdate()
        if not sdl2.SDL_GameControllerGetAttached(self._controller):
            raise GamepadDisconnected(f"game controller '{self.name}' was disconnected")
        pad = self._controller
        axes = [axis_to_joy(sdl2.SDL_GameControllerGetAxis(pad, i)) for i in range(N_AXES)]
        buttons = [int(sdl2.SDL_GameControllerGetButton(pad, i)) for i in range(N_BUTTONS)]
        return axes, buttons

    def close(self) -> None:
        if self._controller:
            sdl2.SDL_GameControllerClose(self._controller)
            self._controller = None
            _quit()

    def __enter__(self) -> SdlGamepad:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _init() -> None:
    # SDL would otherwise take over SIGTERM/SIGINT and turn them into SDL_QUIT events nobody reads.
    sdl2.SDL_SetHint(sdl2.SDL_HINT_NO_SIGNAL_HANDLERS, b"1")
    if sdl2.SDL_InitSubSystem(_SUBSYSTEMS) != 0:
        raise GamepadError(f"SDL game controller init failed: {_sdl_error()}")
    # State is polled, never read from the event queue; ignoring the events keeps it from filling.
    sdl2.SDL_JoystickEventState(sdl2.SDL_IGNORE)
    sdl2.SDL_GameControllerEventState(sdl2.SDL_IGNORE)


def _quit() -> None:
    # Subsystems are reference counted, so this leaves other SDL users in the process alone.
    sdl2.SDL_QuitSubSystem(_SUBSYSTEMS)


def _find(device: int | str) -> int:
    count = sdl2.SDL_NumJoysticks()
    if count < 0:
        raise GamepadError(f"SDL cannot enumerate joysticks: {_sdl_error()}")
    if isinstance(device, int):
        if device < count and sdl2.SDL_IsGameController(device):
            return device
        wanted = f"game controller at index {device}"
    else:
        needle = device.lower()
        for index in range(count):
            if sdl2.SDL_IsGameController(index) and any(needle in n.lower() for n in _names(index)):
                return index
        wanted = f"game controller with '{device}' in its name"
    connected = "; ".join(_describe_devices()) or "none"
    raise GamepadError(f"no {wanted}; connected joysticks: {connected}")


def _names(index: int) -> list[str]:
    # The device's own name and SDL's mapping name can differ ("Xbox Wireless Controller" vs
    # "Xbox Series X Controller"); either may be what the operator knows it by.
    raw = [sdl2.SDL_JoystickNameForIndex(index), sdl2.SDL_GameControllerNameForIndex(index)]
    return list(dict.fromkeys(name.decode(errors="replace") for name in raw if name))


def _describe_devices() -> list[str]:
    lines = []
    for index in range(max(sdl2.SDL_NumJoysticks(), 0)):
        kind = "game controller" if sdl2.SDL_IsGameController(index) else "not a game controller"
        lines.append(f"{index}: {' / '.join(_names(index)) or '(unnamed)'} ({kind})")
    return lines


def _sdl_error() -> str:
    return sdl2.SDL_GetError().decode(errors="replace") or "no SDL error message"
