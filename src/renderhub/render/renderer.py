"""Headless OpenGL renderer: a scene and a pose in, an RGB frame (row 0 at the top) out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple

import moderngl
import numpy as np
from numpy.typing import NDArray

from renderhub.render.camera import Hit, Matrix, Pose, projection_matrix, unproject, view_matrix
from renderhub.render.scene import Batch, Material, PackedBatch, PointBatch, Scene
from renderhub.render.vertices import VERTEX

BACKGROUND = (0.2, 0.2, 0.2)  # neutral dark grey; 51 in each 8-bit channel
BACKGROUND_RGB = tuple(round(c * 255) for c in BACKGROUND)
# Light from over the viewer's shoulder (camera space: +X right, +Y up, +Z back), so faces turned to the
# camera are lit but not flat, and silhouettes stay readable.
HEADLIGHT = np.array([-0.3, 0.5, 1.0]) / np.linalg.norm([-0.3, 0.5, 1.0])
# Flipping clip-space Y makes glReadPixels' first row the top of the image, saving a copy per frame;
# it mirrors the winding too, hence front_face = "cw" below.
FLIP_Y = np.diag([1.0, -1.0, 1.0, 1.0])

# Points are drawn as squares as wide as the cloud's point spacing seen from the camera, so a scanned surface reads
# as a surface up close and as a fine cloud from afar; between these bounds in pixels, a cloud never vanishes nor
# hides the view behind a few huge squares next to the camera.
MIN_POINT_PIXELS, MAX_POINT_PIXELS = 1.0, 16.0
SLICE_TRIANGLES = 500_000  # an abandonable frame checks between slices of this many triangles of a batch

_VERTEX_SHADER = """
#version 330
uniform mat4 u_mvp;
in vec3 in_position;
#ifdef LIT
in vec3 in_normal;
out vec3 v_normal;
#endif
#ifdef TEXTURED
in vec2 in_texcoord;
out vec2 v_texcoord;
#endif
#ifdef VERTEX_COLOR
in vec4 in_color;
out vec4 v_color;
#endif
#ifdef POINTS
uniform float u_point_size;  // world units times pixels per world unit at distance 1
uniform vec2 u_point_bounds;
#endif
void main() {
    gl_Position = u_mvp * vec4(in_position, 1.0);
#ifdef LIT
    v_normal = in_normal;
#endif
#ifdef TEXTURED
    v_texcoord = in_texcoord;
#endif
#ifdef VERTEX_COLOR
    v_color = in_color;
#endif
#ifdef POINTS
    gl_PointSize = clamp(u_point_size / max(gl_Position.w, 1e-6), u_point_bounds.x, u_point_bounds.y);
#endif
}
"""
# Shading is in linear light with gamma 2 standing in for sRGB: a square and a square root cost llvmpipe far
# less than pow(). Factors and vertex colours are linear in glTF, base-colour textures sRGB. Unlit materials
# (KHR_materials_unlit) and points, which have no normals, show their colour as it is.
_FRAGMENT_SHADER = """
#version 330
uniform sampler2D u_texture;
uniform vec4 u_base_color;
uniform vec3 u_light;
uniform float u_cutoff;
out vec4 f_color;
#ifdef LIT
in vec3 v_normal;
#endif
#ifdef TEXTURED
in vec2 v_texcoord;
#endif
#ifdef VERTEX_COLOR
in vec4 v_color;
#endif
void main() {
    vec4 color = u_base_color;
#ifdef VERTEX_COLOR
    color *= v_color;
#endif
#ifdef TEXTURED
    vec4 texel = texture(u_texture, v_texcoord);
    color *= vec4(texel.rgb * texel.rgb, texel.a);
#endif
#ifdef ALPHA_MASK
    if (color.a < u_cutoff) discard;
#endif
#ifdef LIT
    vec3 n = normalize(gl_FrontFacing ? v_normal : -v_normal);
    float diffuse = max(dot(n, u_light), 0.0);
    float sky = 0.5 + 0.5 * n.y;
    vec3 lit = color.rgb * (0.08 + 0.12 * sky + 0.7 * diffuse);
    f_color = vec4(sqrt(lit), color.a);
#else
    f_color = vec4(sqrt(color.rgb), color.a);
#endif
}
"""
_ATTRIBUTES = ("in_position", "in_normal", "in_texcoord", "in_color")
_SHADERS = (_VERTEX_SHADER.lstrip(), _FRAGMENT_SHADER.lstrip())
_POINT = np.dtype([("p", "f4", 3), ("c", "u1", 4)])


class _Variant(NamedTuple):
    textured: bool
    colors: bool  # vertex colours
    mask: bool  # alpha mask
    lit: bool
    points: bool = False


_NAMES = ("TEXTURED", "VERTEX_COLOR", "ALPHA_MASK", "LIT", "POINTS")
# Compiled up front: the lit triangle variants every model uses; the rest on first use.
_COMMON = [_Variant(t, c, m, True) for t in (False, True) for c in (False, True) for m in (False, True)]


def _program(ctx: moderngl.Context, variant: _Variant) -> moderngl.Program:
    defines = "".join(f"#define {name}\n" for name, on in zip(_NAMES, variant, strict=True) if on)
    vertex, fragment = (s.replace("#version 330\n", "#version 330\n" + defines, 1) for s in _SHADERS)
    return ctx.program(vertex_shader=vertex, fragment_shader=fragment)


@dataclass
class _Draw:
    vao: moderngl.VertexArray
    buffers: tuple[moderngl.Buffer, ...]
    program: moderngl.Program
    texture: moderngl.Texture | None
    base_color: tuple[float, float, float, float]
    cull: bool
    mask: bool
    blend: bool
    cutoff: float
    origin: NDArray[np.float64] | None = None  # points: where their positions are relative to
    spacing: float = 0.0  # points: their world size
    triangles: int = 0


class Renderer:
    """One OpenGL context and framebuffer; not thread-safe: use it from the thread (or process) that made it."""

    def __init__(self, width: int, height: int, *, device_index: int | None = None, samples: int = 0) -> None:
        options: dict[str, Any] = {"backend": "egl", "require": 330}
        if device_index is not None:
            options["device_index"] = device_index
        try:
            self._ctx = moderngl.create_standalone_context(**options)
        except Exception as e:
            raise RuntimeError(f"no headless OpenGL 3.3 context through EGL: {e}") from e
        self._ctx.front_face = "cw"
        self._ctx.cull_face = "back"
        self._ctx.enable(moderngl.PROGRAM_POINT_SIZE)  # points size themselves in the vertex shader
        # Variants rather than branches or dummy inputs: on llvmpipe every varying costs triangle setup (an unused
        # vertex colour cost the 121k-triangle engine a quarter of its vertex stage, 8% of a 720p frame), a dummy
        # texture costs a sample per pixel, and `discard` anywhere in a shader turns off its early depth test.
        self._programs = {variant: _program(self._ctx, variant) for variant in _COMMON}
        self._levels: list[list[_Draw]] = [[]]  # full detail first, then each coarser level of detail
        self._textures: list[moderngl.Texture] = []
        self._scene: Scene | None = None
        self.samples = samples
        self.width = self.height = 0
        self._fbos: list[moderngl.Framebuffer] = []
        self._last_frame: tuple[Pose, Matrix] | None = None  # the pose and world-to-clip matrix picks unproject with
        self._point_scale = 0.0  # this frame's pixels per world unit at distance 1, for sizing points
        self.resize(width, height)
        self.last_render_ms = 0.0
        self.last_level = 0

    @property
    def gl_renderer(self) -> str:
        return str(self._ctx.info["GL_RENDERER"])

    @property
    def triangles(self) -> int:
        return self._scene.triangles if self._scene else 0

    @property
    def points(self) -> int:
        return self._scene.points if self._scene else 0

    @property
    def draw_calls(self) -> int:
        return len(self._levels[0])

    @property
    def level_primitives(self) -> list[int]:
        """Primitives at each level of detail, full detail (level 0) first."""
        return self._scene.level_primitives if self._scene else [0]

    def figures(self) -> dict[str, Any]:
        """What the inspector and the hub show about rendering."""
        return {
            "glRenderer": self.gl_renderer,
            "width": self.width,
            "height": self.height,
            "samples": self.samples,
            "triangles": self.triangles,
            "points": self.points,
            "drawCalls": self.draw_calls,
            "levelPrimitives": self.level_primitives,
            "lastLevel": self.last_level,
            "lastRenderMs": round(self.last_render_ms, 2),
        }

    def resize(self, width: int, height: int) -> None:
        if not (0 < width <= 8192 and 0 < height <= 8192):
            raise ValueError(f"frame size {width}x{height} is out of range")
        for fbo in self._fbos:
            for attachment in (*fbo.color_attachments, fbo.depth_attachment):
                if attachment is not None:
                    attachment.release()
            fbo.release()
        ctx = self._ctx
        self._fbos = [
            ctx.framebuffer(
                color_attachments=[ctx.renderbuffer((width, height), 4, samples=self.samples)],
                depth_attachment=ctx.depth_renderbuffer((width, height), samples=self.samples),
            )
        ]
        if self.samples:  # multisampled buffers cannot be read: resolve into a plain one (depth too, for picks)
            self._fbos.append(
                ctx.framebuffer(
                    color_attachments=[ctx.renderbuffer((width, height), 4)],
                    depth_attachment=ctx.depth_renderbuffer((width, height)),
                )
            )
        self.width, self.height = width, height
        self._last_frame = None  # new buffers hold no frame

    def upload(self, scene: Scene) -> None:
        """Replace the model on the GPU with `scene`, every level of detail of it."""
        self.clear()
        textures: dict[int, moderngl.Texture] = {}
        full = [self._batch_draw(batch, textures) for batch in scene.batches]
        full += [self._cloud_draw(cloud) for cloud in scene.clouds]
        self._levels = [full, *([self._batch_draw(batch, textures) for batch in level] for level in scene.coarser)]
        for draws in self._levels:
            # Opaque first, culled before double-sided (fewer state changes), blended last over what they cover.
            draws.sort(key=lambda d: (d.blend, d.mask, not d.cull, d.texture is not None))
        self._textures = list(textures.values())
        self._scene = scene

    def _batch_draw(self, batch: Batch | PackedBatch, textures: dict[int, moderngl.Texture]) -> _Draw:
        material = batch.material
        texture = None
        if material.texture is not None:
            if id(material.texture) not in textures:
                image = material.texture
                created = self._ctx.texture((image.shape[1], image.shape[0]), 4, np.ascontiguousarray(image))
                created.build_mipmaps()
                created.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
                textures[id(material.texture)] = created
            texture = textures[id(material.texture)]
        if isinstance(batch, PackedBatch):  # in the buffers' layout already: GL copies the file's bytes as they are
            vbo, ibo, colors = self._ctx.buffer(batch.vertices), self._ctx.buffer(batch.indices), batch.colored
        else:
            vertices = np.empty(len(batch.positions), VERTEX)
            vertices["p"], vertices["n"] = batch.positions, batch.normals
            vertices["t"], vertices["c"] = batch.texcoords, batch.colors
            vbo = self._ctx.buffer(vertices.tobytes())
            ibo = self._ctx.buffer(np.ascontiguousarray(batch.indices, dtype=np.uint32).tobytes())
            colors = bool((batch.colors != 255).any())
        variant = _Variant(texture is not None, colors, material.alpha_mode == "MASK", not material.unlit)
        # Attributes a variant does not read are skipped ("x") in the shared 36-byte vertex layout.
        layout = " ".join(
            ("3f", "3f" if variant.lit else "12x", "2f" if variant.textured else "8x", "4f1" if colors else "4x")
        )
        names = [n for n, on in zip(_ATTRIBUTES, (True, variant.lit, *variant[:2]), strict=True) if on]
        program = self._program(variant)
        vao = self._ctx.vertex_array(program, [(vbo, layout, *names)], index_buffer=ibo, index_element_size=4)
        state = self._state(material, not material.double_sided)
        return _Draw(vao, (vbo, ibo), program, texture, *state, triangles=batch.triangles)

    def _cloud_draw(self, cloud: PointBatch) -> _Draw:
        material = cloud.material
        variant = _Variant(False, cloud.colors is not None, material.alpha_mode == "MASK", False, True)
        if cloud.colors is None:
            vbo = self._ctx.buffer(np.ascontiguousarray(cloud.positions, np.float32))  # no bytes copy: GL copies
            attributes: list[tuple[Any, ...]] = [(vbo, "3f", "in_position")]
        else:
            vertices = np.empty(len(cloud.positions), _POINT)
            vertices["p"], vertices["c"] = cloud.positions, cloud.colors
            vbo = self._ctx.buffer(vertices)
            del vertices
            attributes = [(vbo, "3f 4f1", "in_position", "in_color")]
        program = self._program(variant)
        vao = self._ctx.vertex_array(program, attributes)
        return _Draw(vao, (vbo,), program, None, *self._state(material, False), cloud.origin, cloud.spacing)

    @staticmethod
    def _state(material: Material, cull: bool) -> tuple[tuple[float, float, float, float], bool, bool, bool, float]:
        """(base colour, cull, mask, blend, cutoff) of a draw with `material`."""
        mode = material.alpha_mode
        return material.base_color, cull, mode == "MASK", mode == "BLEND", material.alpha_cutoff

    def _program(self, variant: _Variant) -> moderngl.Program:
        if variant not in self._programs:
            self._programs[variant] = _program(self._ctx, variant)
        return self._programs[variant]

    def clear(self) -> None:
        """Drop the model: frames show only the background."""
        for draw in (draw for draws in self._levels for draw in draws):
            draw.vao.release()
            for buffer in draw.buffers:
                buffer.release()
        for texture in self._textures:
            texture.release()
        self._levels, self._textures, self._scene = [[]], [], None

    def render(self, pose: Pose, level: int = 0, abandon: Callable[[], bool] | None = None) -> NDArray[np.uint8] | None:
        """The frame seen from `pose` at a level of detail (0: full; past the coarsest, the coarsest): (height, width,
        3) RGB, row 0 at the top, ready for a video frame. With `abandon`, asked between slices of a large draw: None
        once it says so (a long full-detail frame gives way to a camera that moves again)."""
        started = time.perf_counter()
        level = min(level, len(self._levels) - 1)
        draws = self._levels[level]
        ctx, fbo = self._ctx, self._fbos[0]
        fbo.use()
        fbo.depth_mask = True
        ctx.clear(*BACKGROUND, 1.0, depth=1.0)
        bounds = self._scene.bounds if self._scene else None
        projection = projection_matrix(pose, self.width / self.height, bounds)
        mvp = FLIP_Y @ projection @ view_matrix(pose)
        self._point_scale = projection[1, 1] * self.height / 2
        if draws:
            light = pose.rotation() @ HEADLIGHT
            for variant, program in self._programs.items():
                if variant.points:
                    continue  # placed by their origin: set for each draw
                program["u_mvp"].write(mvp.T.astype("f4").tobytes())  # type: ignore[union-attr]
                if variant.lit:
                    program["u_light"].value = tuple(light)  # type: ignore[union-attr]
                if variant.textured:
                    program["u_texture"].value = 0  # type: ignore[union-attr]
            ctx.enable(moderngl.DEPTH_TEST)
            for draw in draws:
                if not self._draw(draw, mvp, abandon):
                    ctx.disable(moderngl.BLEND)
                    self._last_frame = None  # the framebuffer holds half a frame: no pick answers from it
                    return None
            ctx.disable(moderngl.BLEND)
        out = np.empty((self.height, self.width, 3), np.uint8)
        if self.samples:
            ctx.copy_framebuffer(self._fbos[1], fbo)
        self._fbos[-1].read_into(out, components=3, alignment=1)
        self._last_frame = (pose, mvp)
        self.last_render_ms = (time.perf_counter() - started) * 1000
        self.last_level = level
        return out

    def pick(self, x: float, y: float) -> Hit | None:
        """What the last frame shows at (x, y), fractions of the frame from its top-left; None for background.

        Reads one depth value back from the last frame, so a pick answers for what the client was shown.
        """
        if self._last_frame is None:
            return None
        pose, mvp = self._last_frame
        column, row = min(int(x * self.width), self.width - 1), min(int(y * self.height), self.height - 1)
        # FLIP_Y puts the image's top row at framebuffer row 0, so rows need no flipping here.
        raw = self._fbos[-1].read(viewport=(column, row, 1, 1), components=1, attachment=-1, dtype="f4")
        depth = float(np.frombuffer(raw, np.float32)[0])
        if depth >= 1.0:  # cleared to the far plane: nothing drawn there
            return None
        # The exact (x, y), not the pixel's centre: the point lies on the very ray a client casts through its pointer.
        world = unproject(mvp, (2.0 * x - 1.0, 2.0 * y - 1.0, 2.0 * depth - 1.0))
        position = (float(world[0]), float(world[1]), float(world[2]))
        return Hit(position, float(np.linalg.norm(world - np.asarray(pose.position))))

    def _draw(self, draw: _Draw, mvp: Matrix, abandon: Callable[[], bool] | None = None) -> bool:
        """Draw one batch; False when `abandon` said so between its slices."""
        ctx = self._ctx
        if draw.cull:
            ctx.enable(moderngl.CULL_FACE)
        else:
            ctx.disable(moderngl.CULL_FACE)
        if draw.blend:
            ctx.enable(moderngl.BLEND)
            ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
            self._fbos[0].depth_mask = False  # see what lies behind, yet stay hidden behind opaque parts
        program = draw.program
        program["u_base_color"].value = draw.base_color  # type: ignore[union-attr]
        if draw.mask:
            program["u_cutoff"].value = draw.cutoff  # type: ignore[union-attr]
        if draw.texture is not None:
            draw.texture.use(0)
        if draw.origin is None:
            if abandon is None or draw.triangles <= SLICE_TRIANGLES:
                draw.vao.render(moderngl.TRIANGLES)
                return True
            # llvmpipe shades vertices and sets triangles up in the draw call itself: between slices is where a
            # frame can stop.
            for first in range(0, draw.triangles, SLICE_TRIANGLES):
                if abandon():
                    return False
                count = min(SLICE_TRIANGLES, draw.triangles - first)
                draw.vao.render(moderngl.TRIANGLES, vertices=3 * count, first=3 * first)
            return True
        # In float64, the origin's large coordinates and the camera's cancel before anything is rounded to float32.
        model = np.eye(4)
        model[:3, 3] = draw.origin
        program["u_mvp"].write((mvp @ model).T.astype("f4").tobytes())  # type: ignore[union-attr]
        program["u_point_size"].value = draw.spacing * self._point_scale  # type: ignore[union-attr]
        program["u_point_bounds"].value = (MIN_POINT_PIXELS, MAX_POINT_PIXELS)  # type: ignore[union-attr]
        draw.vao.render(moderngl.POINTS)
        return True

    def release(self) -> None:
        self.clear()
        self._ctx.release()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
